//! The audit trail: one JSON line with target `audit` for each call of an
//! RPC that changes state (its scope [`crate::auth::Scope::mutates`]), when
//! principals are configured. The line names the principal, the RPC, the
//! status code it ended with and what it touched (the order, the product,
//! the producer and sequences of its batches, how many events); never a
//! credential.
//!
//! [`crate::MetricsLayer`], outside every other layer, puts an [`Audit`]
//! in the request's extensions and writes the line when the call's status
//! is known, so calls that a layer refuses, that panic or that the client
//! cancels are recorded too. [`crate::AuthLayer`] fills in the principal,
//! the handlers what they touched.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tonic::Code;

/// One call's audit record, filled in as it goes.
#[derive(Debug, Default)]
pub struct Audit {
    principal: OnceLock<Arc<str>>,
    touched: Mutex<Touched>,
}

#[derive(Debug, Default)]
struct Touched {
    order_id: Option<String>,
    product_id: Option<String>,
    producer_id: Option<String>,
    first_sequence: Option<u64>,
    last_sequence: Option<u64>,
    events: u64,
}

impl Audit {
    /// The principal calling.
    pub fn principal(&self, name: &Arc<str>) {
        let _ = self.principal.set(Arc::clone(name));
    }

    fn touch(&self, change: impl FnOnce(&mut Touched)) {
        change(&mut self.touched.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Writes the line: the call of `service`/`method` ended with `code`.
    pub(crate) fn write(&self, service: &str, method: &str, code: Code) {
        let touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
        tracing::info!(
            target: "audit",
            principal = self.principal.get().map(|p| &**p),
            service,
            method,
            code = crate::observe::code_name(code),
            order_id = touched.order_id.as_deref(),
            product_id = touched.product_id.as_deref(),
            producer_id = touched.producer_id.as_deref(),
            first_sequence = touched.first_sequence,
            last_sequence = touched.last_sequence,
            events = (touched.events > 0).then_some(touched.events),
            "mutation"
        );
    }
}

/// A handler's view of its call's [`Audit`]: nothing when the call has
/// none (auditing is off, or the call is not a mutation).
#[derive(Debug, Clone, Default)]
pub struct Trail(Option<Arc<Audit>>);

impl Trail {
    /// The trail of `request`'s call.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        Self(request.extensions().get::<Arc<Audit>>().cloned())
    }

    fn touch(&self, change: impl FnOnce(&mut Touched)) {
        if let Some(audit) = &self.0 {
            audit.touch(change);
        }
    }

    /// The call touched order `id`.
    pub fn order(&self, id: impl std::fmt::Display) {
        if self.0.is_some() {
            let id = id.to_string();
            self.touch(|t| t.order_id = Some(id));
        }
    }

    /// The call touched product `id`.
    pub fn product(&self, id: &str) {
        self.touch(|t| t.product_id = Some(id.to_owned()));
    }

    /// The call sent `producer`'s batch `sequence` of `events` events.
    pub fn batch(&self, producer: &str, sequence: u64, events: u64) {
        self.touch(|t| {
            if t.producer_id.is_none() && !producer.is_empty() {
                t.producer_id = Some(producer.to_owned());
            }
            t.first_sequence.get_or_insert(sequence);
            t.last_sequence = Some(sequence);
            t.events += events;
        });
    }

    /// The call sent `count` more events.
    pub fn events(&self, count: u64) {
        self.touch(|t| t.events += count);
    }
}
