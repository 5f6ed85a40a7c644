//! The `orderflow` binary: reads configuration, starts telemetry, and runs
//! the chosen command. The wiring lives in this crate's library
//! (`src/lib.rs`), the logic in the other crates.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use server::config::{Cli, Command, DeadLettersCommand, EventsCommand};
use server::serve::Open;
use server::{dead_letters_cli, events_cli, serve, telemetry};

/// jemalloc instead of the system allocator. Acknowledged ingest allocates
/// and frees a few strings per event across threads: with glibc's malloc
/// (~10% of the server's CPU profile) resident memory wandered by 15-30 MB
/// under a steady overload; with jemalloc it stays within 4 MB, and ingest
/// runs 7-16% faster (docs/benchmarks.md). mimalloc was as fast but held
/// twice the memory.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _failpoints = grpc_api::failpoints_from_env();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter (tonic) needs the runtime while it is built and
    // flushed, not just while serving.
    let _runtime = runtime.enter();
    let telemetry = match telemetry::init(&cli.settings) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    // Run on a worker, not on this thread, so that the stall watchdog,
    // which watches the workers, watches all of it.
    let result = runtime.block_on(async {
        tokio::spawn(run(cli))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the main task failed: {e}")))
    });
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One clear line, no backtrace.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `orderflow migrate --status`: one line per migration, then a summary;
/// an error (a non-zero exit) while any is pending.
async fn migration_status(settings: &server::config::Settings) -> anyhow::Result<()> {
    let status = storage::migrate::status(&serve::store_config(settings))
        .await
        .map_err(|e| serve::database_error(settings, e))
        .context("cannot read the database's migrations")?;
    let mut out = std::io::stdout().lock();
    for name in &status.applied {
        writeln!(out, "applied  {name}")?;
    }
    for name in &status.pending {
        writeln!(out, "pending  {name}")?;
    }
    writeln!(
        out,
        "{} applied, {} pending",
        status.applied.len(),
        status.pending.len()
    )?;
    if !status.pending.is_empty() {
        anyhow::bail!(
            "{} migration(s) pending, from {}: run `orderflow migrate` (or start the server) to apply them",
            status.pending.len(),
            status.pending.first().map_or("", String::as_str)
        );
    }
    Ok(())
}

/// `orderflow backup --to FILE`, with progress on standard error every
/// second while it runs.
async fn backup(settings: &server::config::Settings, to: &std::path::Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let done = storage::backup::backup(
        &serve::store_config(settings),
        to,
        std::time::Duration::from_secs(1),
        |at| {
            let percent = (at.written * 100)
                .checked_div(at.total)
                .unwrap_or(0)
                .min(99);
            eprintln!(
                "backup: {:.1} MB of about {:.1} MB ({percent}%)",
                megabytes(at.written),
                megabytes(at.total)
            );
        },
    )
    .await
    .map_err(|e| serve::database_error(settings, e))?;
    eprintln!(
        "backup: {:.1} MB written to {} in {:.1?}; integrity check ok",
        megabytes(done.bytes),
        done.path.display(),
        started.elapsed()
    );
    Ok(())
}

#[expect(clippy::cast_precision_loss, reason = "a size for people to read")]
fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => serve::serve(cli.settings).await,
        Some(Command::Migrate { status: true }) => migration_status(&cli.settings).await,
        Some(Command::Backup { to }) => backup(&cli.settings, &to).await,
        Some(Command::Restore { from }) => {
            let aside = storage::backup::restore(&serve::store_config(&cli.settings), &from)
                .map_err(|e| serve::database_error(&cli.settings, e))?;
            match aside {
                Some(aside) => eprintln!(
                    "restore: {} is in place; the database it replaced is at {}",
                    from.display(),
                    aside.display()
                ),
                None => eprintln!("restore: {} is in place", from.display()),
            }
            Ok(())
        }
        Some(Command::Migrate { status: false }) => {
            // Connecting migrates (under PostgreSQL's advisory lock), with
            // the same start-up retries as serving.
            serve::connect(&cli.settings, Open::CreateIfMissing).await?;
            tracing::info!("migrations up to date");
            Ok(())
        }
        Some(Command::Events(EventsCommand::Import { file })) => {
            let db = serve::connect(&cli.settings, Open::CreateIfMissing).await?;
            let count = events_cli::import(&db, &file).await?;
            tracing::info!(count, "imported events");
            Ok(())
        }
        Some(Command::Health {
            service,
            ca,
            cert,
            key,
            timeout,
        }) => {
            let identity = cert.as_deref().zip(key.as_deref());
            server::probe::check(&cli.settings, &service, ca.as_deref(), identity, *timeout).await
        }
        Some(Command::Events(EventsCommand::Follow {
            after,
            actions,
            server,
        })) => {
            let server = server.unwrap_or_else(|| {
                format!("http://{}", server::probe::loopback(cli.settings.listen))
            });
            events_cli::follow(&server, cli.settings.client_token(), after, actions).await
        }
        Some(Command::DeadLetters(DeadLettersCommand::List { limit })) => {
            let db = serve::connect(&cli.settings, Open::ReadOnly).await?;
            dead_letters_cli::list(&db, limit).await
        }
        Some(Command::DeadLetters(DeadLettersCommand::Replay { server, batch })) => {
            let db = serve::connect(&cli.settings, Open::CreateIfMissing).await?;
            let server = server.unwrap_or_else(|| {
                format!("http://{}", server::probe::loopback(cli.settings.listen))
            });
            dead_letters_cli::replay(&db, &server, cli.settings.client_token(), batch).await
        }
        Some(Command::DeadLetters(DeadLettersCommand::Purge { before })) => {
            let db = serve::connect(&cli.settings, Open::CreateIfMissing).await?;
            dead_letters_cli::purge(&db, before).await
        }
        Some(Command::Events(EventsCommand::Export)) => {
            let db = serve::connect(&cli.settings, Open::ReadOnly).await?;
            let count = events_cli::export(&db).await?;
            tracing::info!(count, "exported events");
            Ok(())
        }
    }
}
