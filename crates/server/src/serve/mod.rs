//! Serving: start up (settings checked, listeners bound, the database
//! connected with retries), wire the graph (cache, engine, services), start
//! the monitor and the background jobs, serve until SIGTERM/SIGINT, then
//! shut down in order: health NOT_SERVING, stop accepting, let in-flight
//! RPCs finish (bounded by the grace period), drain the pipeline, return
//! (telemetry flushes in `main`).
//!
//! - `startup.rs`: settings, listeners, [`connect`];
//! - `wiring.rs`: the graph and the router;
//! - `monitor.rs`: health names and the monitor;
//! - `jobs.rs`: background jobs on the bookkeeping tables;
//! - `spans.rs`: the request span and head sampling.

mod jobs;
mod monitor;
mod spans;
mod startup;
mod wiring;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tonic_health::ServingStatus;

pub use startup::{Open, connect, database_error, store_config};

use crate::config::{Retention, Settings};
use monitor::{CACHE_COHERENCE, LIVENESS, SERVICES};

/// Serves until a signal, then shuts down; see the module documentation.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    // Before anything announces the server: until a handler is installed,
    // SIGTERM's default action ends the process at once, with no drain.
    let shutdown = shutdown_signal()?;
    let started = startup::start(&settings).await?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let mut wired = wiring::wire(&settings, &started.db, started.pipeline, health).await?;

    let (authority, watch) = started.authority;
    let reloading = tokio::spawn(watch.run());
    let forgetting = tokio::spawn(jobs::forget_old_write_ids(started.db.clone()));
    let expiring = match settings.event_retention {
        Retention::Keep(keep) => {
            metrics::gauge!("orderflow_event_retention_seconds").set(keep.as_secs_f64());
            Some(tokio::spawn(jobs::expire_events(started.db.clone(), keep)))
        }
        Retention::Off => {
            metrics::gauge!("orderflow_event_retention_seconds").set(0.0);
            None
        }
    };
    // The watchdog fails liveness at once when a stall begins; the monitor
    // restores it once the stall has cleared.
    let watchdog = crate::watchdog::Watchdog::start(
        &tokio::runtime::Handle::current(),
        settings.stall_timeout.0,
        {
            let (health, runtime) = (wired.health.clone(), tokio::runtime::Handle::current());
            move |_| {
                runtime.block_on(health.set_service_status(LIVENESS, ServingStatus::NotServing));
            }
        },
    )
    .context("cannot start the stall watchdog's thread")?;
    let monitor = tokio::spawn(monitor::monitor(
        monitor::Watched {
            db: started.db.clone(),
            engine: Arc::clone(&wired.engine),
            stalled: watchdog.stalled(),
            orders: wired.orders.clone(),
            feed: wired.feed.as_ref().map(|(state, _)| Arc::clone(state)),
            event_log: wired.event_log.take(),
        },
        wired.health.clone(),
        *settings.health_interval,
    ));

    // Cancelled when the server stops accepting: open health watches end.
    let stopping = tokio_util::sync::CancellationToken::new();
    let address = started.listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = wiring::spawn_server(
        &settings,
        started.tls,
        authority,
        &started.db,
        health_service,
        wired.services,
        stopping.clone(),
        started.listener,
        stopped,
    )?;
    let tls = match (&settings.tls_cert, &settings.tls_client_ca) {
        (None, _) => "off",
        (Some(_), None) => "on",
        (Some(_), Some(_)) => "mutual",
    };
    tracing::info!(%address, metrics = %settings.metrics_listen, backend = ?started.db.backend(), tls, "serving gRPC");

    shutdown.await;
    tracing::info!("shutting down: NOT_SERVING, finishing in-flight RPCs");
    // Over before NOT_SERVING is set: `abort` takes effect at the monitor's
    // next await, and a monitor already on another worker, flipping the
    // services back to SERVING after a slow ping, would otherwise set
    // SERVING after this sets NOT_SERVING, for the whole shutdown delay.
    monitor.abort();
    let _ = monitor.await;
    forgetting.abort();
    reloading.abort();
    if let Some(expiring) = &expiring {
        expiring.abort();
    }
    if let Some((_, task)) = &wired.feed {
        task.abort();
    }
    for service in SERVICES.into_iter().chain([LIVENESS, CACHE_COHERENCE]) {
        wired
            .health
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
    if !settings.shutdown_delay.is_zero() {
        tracing::info!(delay = %settings.shutdown_delay, "NOT_SERVING; still answering until the delay passes");
        tokio::time::sleep(*settings.shutdown_delay).await;
    }
    stopping.cancel();
    let _ = stop.send(());
    let grace = *settings.shutdown_grace;
    let deadline = Instant::now() + grace;
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::error!(%error, "the gRPC server failed"),
        Ok(Err(error)) => tracing::error!(%error, "the gRPC server task failed"),
        Err(_) => tracing::warn!(
            ?grace,
            "grace period over; closing the remaining connections"
        ),
    }
    drop(watchdog);
    let engine =
        Arc::into_inner(wired.engine).context("the pipeline is still shared at shutdown")?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    match tokio::time::timeout(left, engine.shutdown()).await {
        Ok(stats) => tracing::info!(?stats, "pipeline drained"),
        Err(_) => tracing::error!("the pipeline did not drain within the grace period"),
    }
    Ok(())
}

/// SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the future is first polled: a signal that comes in between is
/// kept, and ends the wait at once.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
