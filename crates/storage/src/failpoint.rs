//! Failpoints that may block, evaluated off the async workers.
//!
//! The `fail` crate's `sleep(N)` and `pause` actions block the calling
//! thread. Inside an async lookup that would freeze a runtime worker (with
//! two workers, a few concurrent lookups freeze the server), so a failpoint
//! could not stand in for a slow database. Here the failpoint is evaluated
//! on tokio's blocking pool: a sleep delays only its own request, a
//! `panic` still unwinds through the caller, and `return(arg)` hands back
//! its argument. Without the `failpoints` feature this is nothing.

/// Evaluates failpoint `name`: `Some(arg)` when it fired a `return(arg)`
/// action, `None` otherwise (not armed, or a sleep or print that finished).
#[cfg(feature = "failpoints")]
pub(crate) async fn eval(name: &'static str) -> Option<Option<String>> {
    match tokio::task::spawn_blocking(move || fail::eval(name, |arg| arg)).await {
        Ok(action) => action,
        // A `panic` action: unwind in the caller, as a real failure would.
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => None,
    }
}

/// Without the `failpoints` feature: never fires.
#[cfg(not(feature = "failpoints"))]
#[expect(
    clippy::unused_async,
    reason = "the same signature as the armed version"
)]
pub(crate) async fn eval(_name: &'static str) -> Option<Option<String>> {
    None
}
