//! [`CachedOrder`]: how the cache holds and hands out orders.
//!
//! An order is an immutable snapshot once read, so readers share one copy by
//! reference count. The allocation also carries the cache's per-entry
//! bookkeeping (expiry, CLOCK reference bit), so a cache hit touches one
//! allocation: the one the caller is about to read anyway. Keeping that
//! bookkeeping beside the pointer in the index instead doubled the index's
//! entry size and cost hits about a third of their throughput
//! (docs/benchmarks.md). It also keeps one derived form of the order (the
//! server's encoded response), computed on first use: a snapshot never
//! changes, so neither does anything derived from it, and it is dropped
//! with the snapshot when the order changes.

use std::any::Any;
use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, OnceLock};

use domain::Order;

use crate::{FoundOrder, OrderForm};

/// A cached, reference-counted, read-only order. Dereferences to [`Order`];
/// cloning it shares the snapshot.
#[derive(Clone)]
pub struct CachedOrder(Arc<Slot>);

/// `repr(C)` with the bookkeeping first: it then shares the first cache
/// line with the `Arc`'s reference counts, which a hit touches anyway. (Left
/// to rustc, the fields landed 120 bytes in, past a large `Order`, and every
/// hit paid a second cache miss.)
#[repr(C)]
pub(crate) struct Slot {
    /// Cache expiry, milliseconds on the cache's wrapping clock.
    pub(crate) expires_at: AtomicU32,
    /// CLOCK's reference bit: set by hits, cleared by the eviction sweep.
    pub(crate) referenced: AtomicBool,
    pub(crate) order: Order,
    /// The first [`OrderForm`] asked of this snapshot.
    form: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl CachedOrder {
    /// Shares `order`.
    pub fn new(order: Order) -> Self {
        Self(Arc::new(Slot {
            order,
            expires_at: AtomicU32::new(0),
            referenced: AtomicBool::new(false),
            form: OnceLock::new(),
        }))
    }

    pub(crate) fn slot(&self) -> &Slot {
        &self.0
    }
}

/// Keeps the first form asked for; another form (no server asks for two)
/// is computed on every call.
impl FoundOrder for CachedOrder {
    fn form<F: OrderForm>(&self) -> F {
        let kept = self.0.form.get_or_init(|| Box::new(F::of(&self.0.order)));
        match kept.downcast_ref::<F>() {
            Some(form) => form.clone(),
            None => F::of(&self.0.order),
        }
    }
}

impl From<Order> for CachedOrder {
    fn from(order: Order) -> Self {
        Self::new(order)
    }
}

/// The order itself: moved out when this was the last reference, copied
/// otherwise (a repository stacked on a cache needs an owned order).
impl From<CachedOrder> for Order {
    fn from(cached: CachedOrder) -> Self {
        match Arc::try_unwrap(cached.0) {
            Ok(slot) => slot.order,
            Err(shared) => shared.order.clone(),
        }
    }
}

impl Deref for CachedOrder {
    type Target = Order;

    fn deref(&self) -> &Order {
        &self.0.order
    }
}

impl Borrow<Order> for CachedOrder {
    fn borrow(&self) -> &Order {
        &self.0.order
    }
}

impl fmt::Debug for CachedOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0.order, f)
    }
}

impl PartialEq for CachedOrder {
    fn eq(&self, other: &Self) -> bool {
        self.0.order == other.0.order
    }
}

impl Eq for CachedOrder {}
