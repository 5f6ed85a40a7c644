//! Following the stored events with resume built in: [`Follow`].

use std::time::Duration;

use tonic::{Code, Status, Streaming};

use crate::client::EventClient;
use crate::proto::{EventPage, SubscribeEventsRequest};
use crate::{Reason, reason};

/// The first wait before subscribing again; it doubles per failure.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// A subscription to the stored events (SubscribeEvents) that survives the
/// server: when the stream breaks (a restart, a network fault, the server
/// shutting down or shedding load) it subscribes again after the last
/// position it handed out, so the pages it returns have no gap and no
/// repeat. Made by [`crate::Client::follow`].
///
/// It gives up only on an error that another attempt cannot cure: a bad
/// request, a missing token, or `POSITION_EXPIRED` (read the oldest
/// position still stored with [`crate::oldest_position`]).
#[derive(Debug)]
pub struct Follow {
    events: EventClient,
    request: SubscribeEventsRequest,
    stream: Option<Streaming<EventPage>>,
    retry: Duration,
}

impl Follow {
    pub(crate) fn new(events: EventClient, after: u64) -> Self {
        Self {
            events,
            request: SubscribeEventsRequest {
                after_position: after,
                actions: Vec::new(),
                max_page: 0,
            },
            stream: None,
            retry: FIRST_RETRY,
        }
    }

    /// Only events with one of `actions` (by default every action).
    #[must_use]
    pub fn actions(mut self, actions: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.request.actions = actions.into_iter().map(Into::into).collect();
        self
    }

    /// At most `max_page` events per page (0, the default: the server's).
    #[must_use]
    pub fn max_page(mut self, max_page: u32) -> Self {
        self.request.max_page = max_page;
        self
    }

    /// The position of the last event handed out (the one given at the
    /// start, before any): where a later subscription resumes.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.request.after_position
    }

    /// The next page of events, waiting for new ones once caught up, and
    /// subscribing again as often as it takes while the failure is one a
    /// retry can cure.
    ///
    /// # Errors
    /// The first status no retry can cure.
    pub async fn next_page(&mut self) -> Result<EventPage, Status> {
        loop {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => match self.events.subscribe_events(self.request.clone()).await {
                    Ok(response) => self.stream.insert(response.into_inner()),
                    Err(status) => {
                        self.wait_to_retry(status).await?;
                        continue;
                    }
                },
            };
            match stream.message().await {
                Ok(Some(page)) => {
                    if let Some(last) = page.events.last() {
                        self.request.after_position = last.position;
                    }
                    self.retry = FIRST_RETRY;
                    return Ok(page);
                }
                // A subscription never ends by itself: the server went away
                // between messages.
                Ok(None) => {
                    self.stream = None;
                    self.wait_to_retry(Status::unavailable("the subscription ended"))
                        .await?;
                }
                Err(status) => {
                    self.stream = None;
                    self.wait_to_retry(status).await?;
                }
            }
        }
    }

    /// Waits before the next attempt if `status` is worth one; else it is
    /// the answer.
    async fn wait_to_retry(&mut self, status: Status) -> Result<(), Status> {
        if !retryable(&status) {
            return Err(status);
        }
        tokio::time::sleep(self.retry).await;
        self.retry = (self.retry * 2).min(MAX_RETRY);
        Ok(())
    }
}

/// Whether subscribing again may succeed: the server's transient reasons,
/// and transport failures (which carry no orderflow reason).
fn retryable(status: &Status) -> bool {
    match reason(status) {
        Some(
            Reason::DatabaseUnavailable
            | Reason::ShuttingDown
            | Reason::Overloaded
            | Reason::RateLimited,
        ) => true,
        Some(_) => false,
        None => matches!(
            status.code(),
            Code::Unavailable
                | Code::Unknown
                | Code::Cancelled
                | Code::Internal
                | Code::Aborted
                | Code::DeadlineExceeded
        ),
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::{ErrorDetails, StatusExt as _};

    use super::retryable;
    use crate::DOMAIN;

    fn with_reason(code: tonic::Code, reason: &str) -> tonic::Status {
        let mut details = ErrorDetails::new();
        details.set_error_info(reason, DOMAIN, std::collections::HashMap::new());
        tonic::Status::with_error_details(code, "x", details)
    }

    #[test]
    fn only_failures_a_retry_can_cure_are_retried() {
        assert!(retryable(&tonic::Status::unavailable("connection reset")));
        assert!(retryable(&tonic::Status::unknown("transport error")));
        assert!(retryable(&with_reason(
            tonic::Code::Unavailable,
            "SHUTTING_DOWN"
        )));
        assert!(!retryable(&with_reason(
            tonic::Code::FailedPrecondition,
            "POSITION_EXPIRED"
        )));
        assert!(!retryable(&with_reason(
            tonic::Code::InvalidArgument,
            "INVALID_FIELD"
        )));
        assert!(!retryable(&tonic::Status::unauthenticated("no token")));
        assert!(retryable(&with_reason(
            tonic::Code::ResourceExhausted,
            "RATE_LIMITED"
        )));
        assert!(!retryable(&with_reason(
            tonic::Code::PermissionDenied,
            "MISSING_SCOPE"
        )));
    }
}
