//! The transform steps: one struct per kind, and [`TransformStep`], the enum
//! the hot path dispatches on with a single `match`.
//!
//! Steps are built from validated configuration (see `config`) and are
//! designed not to allocate per event: attribute keys and values are
//! [`ArcStr`]s, and configured ones are static (adding one copies a
//! pointer, with no allocation and no atomic reference count),
//! de-duplication keeps 64-bit hashes of ids, and aggregation allocates
//! only the first time it sees a key. A step never panics on bad data: it
//! answers [`Verdict::Failed`] and the event is dead-lettered with the
//! reason.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};

use domain::{Action, ArcStr, Event};
use foldhash::fast::FixedState;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::keys::{Key, KeyTable};

/// What a step decided about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on.
    Keep,
    /// A filter dropped it (counted as `filtered`).
    Filtered,
    /// Its id was seen within the window (counted as `deduplicated`).
    Duplicate,
    /// The step could not process it; it goes to the dead-letter store with
    /// this reason.
    Failed(String),
}

/// Where a step reads a key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The event's action (`login`, …).
    Action,
    /// The event's user id.
    UserId,
    /// The value of an attribute.
    Attribute(ArcStr),
}

impl KeySource {
    /// The key for `event`, if it has one.
    #[inline]
    pub fn key<'e>(&self, event: &'e Event) -> Option<&'e str> {
        match self {
            Self::Action => Some(event.action.as_str()),
            Self::UserId => Some(event.user_id.as_str()),
            Self::Attribute(name) => event.attributes.get(name).map(|v| &**v),
        }
    }

    /// The key for `event` as a [`KeyTable`] looks it up: an attribute's
    /// value keeps its identity, so a static one is found by address.
    #[inline]
    pub(crate) fn lookup_key<'e>(&self, event: &'e Event) -> Option<Key<'e>> {
        match self {
            Self::Attribute(name) => event.attributes.get(name).map(Key::of),
            _ => self.key(event).map(Key::text),
        }
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Action => f.write_str("action"),
            Self::UserId => f.write_str("user_id"),
            Self::Attribute(name) => write!(f, "attribute {name:?}"),
        }
    }
}

/// One step of a pipeline. Hot paths call [`TransformStep::apply`] (or
/// match once per batch, see `Pipeline`); trait objects stay at the
/// configuration seam.
#[derive(Debug)]
pub enum TransformStep {
    /// Add or overwrite an attribute.
    Enrich(Enrich),
    /// Keep or drop events by a condition.
    Filter(Filter),
    /// Rename an attribute key.
    Rename(Rename),
    /// Count events and sum amounts per key.
    Aggregate(Aggregate),
    /// Drop repeated event ids within a bounded window.
    Deduplicate(Deduplicate),
}

impl TransformStep {
    /// Applies this step to one event: the single delegating `match`.
    #[inline]
    pub fn apply(&mut self, event: &mut Event) -> Verdict {
        match self {
            Self::Enrich(step) => step.apply(event),
            Self::Filter(step) => step.apply(event),
            Self::Rename(step) => step.apply(event),
            Self::Aggregate(step) => step.apply(event),
            Self::Deduplicate(step) => step.apply(event),
        }
    }

    /// The kind, as configuration spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Enrich(_) => "enrich",
            Self::Filter(_) => "filter",
            Self::Rename(_) => "rename",
            Self::Aggregate(_) => "aggregate",
            Self::Deduplicate(_) => "deduplicate",
        }
    }
}

/// Sets `attribute` to a constant or to a value looked up in a static table.
#[derive(Debug)]
pub struct Enrich {
    pub(crate) attribute: ArcStr,
    pub(crate) value: EnrichValue,
}

#[derive(Debug)]
pub(crate) enum EnrichValue {
    Constant(ArcStr),
    Lookup {
        from: KeySource,
        table: KeyTable<ArcStr>,
        /// `table`'s entry for each known action, indexed by
        /// [`Action::known_index`]: with `from = action` those need no hash.
        by_action: [Option<ArcStr>; Action::KNOWN.len()],
        /// Used when the key is absent from the table (or the event has no
        /// key); `None` with `required` fails the event instead.
        default: Option<ArcStr>,
        required: bool,
    },
}

impl Enrich {
    /// Applies the step.
    #[inline]
    pub fn apply(&mut self, event: &mut Event) -> Verdict {
        let value = match &mut self.value {
            EnrichValue::Constant(value) => value.clone(),
            EnrichValue::Lookup {
                from,
                table,
                by_action,
                default,
                required,
            } => {
                let found = match (&*from, event.action.known_index()) {
                    (KeySource::Action, Some(known)) => {
                        by_action.get(known).and_then(Option::as_ref)
                    }
                    _ => from
                        .lookup_key(event)
                        .and_then(|key| table.find(key))
                        .and_then(|at| table.get(at))
                        .map(|(_, value)| value),
                };
                match (found, &*default) {
                    (Some(value), _) | (None, Some(value)) => value.clone(),
                    (None, None) if *required => {
                        return Verdict::Failed(format!(
                            "no {} entry for {from} {:?}",
                            self.attribute,
                            from.key(event).unwrap_or("(absent)")
                        ));
                    }
                    (None, None) => return Verdict::Keep,
                }
            }
        };
        event.attributes.insert(self.attribute.clone(), value);
        Verdict::Keep
    }
}

/// A condition on one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The action is one of these.
    ActionIn(Vec<Action>),
    /// `amount_cents` is present and at least this.
    AmountAtLeast(i64),
    /// `amount_cents` is present and below this.
    AmountBelow(i64),
    /// The attribute is present.
    HasAttribute(ArcStr),
    /// The attribute has exactly this value.
    AttributeEquals(ArcStr, ArcStr),
}

impl Condition {
    /// Whether `event` meets the condition.
    #[inline]
    pub fn matches(&self, event: &Event) -> bool {
        match self {
            Self::ActionIn(actions) => actions.contains(&event.action),
            Self::AmountAtLeast(min) => event.amount_cents.is_some_and(|a| a.get() >= *min),
            Self::AmountBelow(max) => event.amount_cents.is_some_and(|a| a.get() < *max),
            Self::HasAttribute(name) => event.attributes.get(name).is_some(),
            Self::AttributeEquals(name, value) => {
                event.attributes.get(name).is_some_and(|v| v == value)
            }
        }
    }
}

/// Keeps events that match (`keep`) or drops them (`drop`).
#[derive(Debug)]
pub struct Filter {
    pub(crate) condition: Condition,
    /// `true`: keep matching events; `false`: drop them.
    pub(crate) keep_matching: bool,
}

impl Filter {
    /// Applies the step.
    #[inline]
    pub fn apply(&mut self, event: &mut Event) -> Verdict {
        if self.condition.matches(event) == self.keep_matching {
            Verdict::Keep
        } else {
            Verdict::Filtered
        }
    }
}

/// Moves an attribute's value to a new key.
#[derive(Debug)]
pub struct Rename {
    pub(crate) from: ArcStr,
    pub(crate) to: ArcStr,
    /// Fail events that lack the attribute instead of passing them on.
    pub(crate) required: bool,
}

impl Rename {
    /// Applies the step.
    #[inline]
    pub fn apply(&mut self, event: &mut Event) -> Verdict {
        match event.attributes.remove(&self.from) {
            Some(value) => {
                event.attributes.insert(self.to.clone(), value);
                Verdict::Keep
            }
            None if self.required => {
                Verdict::Failed(format!("attribute {:?} is missing", self.from))
            }
            None => Verdict::Keep,
        }
    }
}

/// Running totals for one aggregation key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Events seen.
    pub count: u64,
    /// Sum of their `amount_cents` (absent counts as 0).
    pub sum_cents: i64,
}

/// An aggregation's published table: totals per key, bounded in size.
#[derive(Debug, Default)]
pub struct AggregateTable {
    /// In the order the keys were first seen (the worker's slot order).
    keys: Vec<(Arc<str>, Totals)>,
    /// Totals for keys seen after the table was full, and for events
    /// without a key.
    other: Totals,
}

impl AggregateTable {
    /// Totals per key, sorted by key, plus the catch-all for keys past the
    /// limit.
    pub fn snapshot(&self) -> (Vec<(Arc<str>, Totals)>, Totals) {
        let mut keys = self.keys.clone();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        (keys, self.other)
    }
}

/// Counts events and sums amounts per key, readable while running through
/// [`Aggregate::table`]. At most `max_keys` keys are tracked (memory stays
/// bounded); later keys go to a catch-all.
///
/// The worker's own totals are authoritative and unlocked (the step belongs
/// to one worker): one slot per key, found in a key table (a scan
/// while there are few keys, a hash lookup past that, one comparison for a
/// static value an enrich step set) or, for a known action, in a small
/// array with no lookup at all. After each batch
/// the slots it touched are copied, by index, into the shared table readers
/// lock. Locking per event instead cost about a third of the pipeline's
/// throughput (docs/benchmarks.md); readers see totals at most one batch
/// old.
#[derive(Debug)]
pub struct Aggregate {
    pub(crate) name: Arc<str>,
    pub(crate) by: KeySource,
    pub(crate) max_keys: usize,
    /// Each tracked key with its slot, in the order first seen.
    slots: KeyTable<Slot>,
    /// With `by = action`: the slot of each known action once seen,
    /// indexed by [`Action::known_index`].
    by_action: [Option<usize>; Action::KNOWN.len()],
    other: Totals,
    /// Slots changed since the last publish.
    dirty: Vec<usize>,
    /// The published copy, its keys in slot order. Locked once per batch by
    /// this worker and briefly by readers; never across an await.
    table: Arc<Mutex<AggregateTable>>,
}

#[derive(Debug)]
struct Slot {
    totals: Totals,
    dirty: bool,
}

impl Aggregate {
    pub(crate) fn new(name: Arc<str>, by: KeySource, max_keys: usize) -> Self {
        Self {
            name,
            by,
            max_keys,
            slots: KeyTable::default(),
            by_action: [None; Action::KNOWN.len()],
            other: Totals::default(),
            dirty: Vec::new(),
            table: Arc::new(Mutex::new(AggregateTable::default())),
        }
    }

    /// The aggregation's name from configuration.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The published table, for readers.
    pub fn table(&self) -> Arc<Mutex<AggregateTable>> {
        Arc::clone(&self.table)
    }

    /// Applies the step to one event (visible to readers after
    /// [`Aggregate::publish`]).
    #[inline]
    pub fn apply(&mut self, event: &mut Event) -> Verdict {
        let amount = event.amount_cents.map_or(0, |a| a.get());
        let Some((index, slot)) = self
            .slot_of(event)
            .and_then(|index| Some((index, self.slots.value_mut(index)?)))
        else {
            return add(&self.name, &mut self.other, amount);
        };
        let verdict = add(&self.name, &mut slot.totals, amount);
        if verdict == Verdict::Keep && !slot.dirty {
            slot.dirty = true;
            self.dirty.push(index);
        }
        verdict
    }

    /// The slot for `event`'s key, made if there is room; `None` for the
    /// catch-all.
    #[inline]
    fn slot_of(&mut self, event: &Event) -> Option<usize> {
        let known = match self.by {
            KeySource::Action => event.action.known_index(),
            _ => None,
        };
        if let Some(&Some(slot)) = known.and_then(|k| self.by_action.get(k)) {
            return Some(slot);
        }
        let key = self.by.lookup_key(event)?;
        let slot = match self.slots.find(key) {
            Some(slot) => slot,
            None if self.slots.len() < self.max_keys => self.slots.push(
                Arc::from(key.as_str()),
                Slot {
                    totals: Totals::default(),
                    dirty: false,
                },
            ),
            None => return None,
        };
        if let Some(cached) = known.and_then(|k| self.by_action.get_mut(k)) {
            *cached = Some(slot);
        }
        Some(slot)
    }

    /// Copies the slots changed since the last call into the shared table.
    pub fn publish(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        // Keys first seen in this batch get their entry (slots only grow).
        let published = table.keys.len();
        table.keys.extend(
            self.slots
                .entries_from(published)
                .iter()
                .map(|(key, slot)| (Arc::clone(key), slot.totals)),
        );
        for index in self.dirty.drain(..) {
            if let (Some(slot), Some(entry)) =
                (self.slots.value_mut(index), table.keys.get_mut(index))
            {
                slot.dirty = false;
                entry.1 = slot.totals;
            }
        }
        table.other = self.other;
    }
}

fn add(name: &str, totals: &mut Totals, amount: i64) -> Verdict {
    match totals.sum_cents.checked_add(amount) {
        Some(sum) => {
            totals.sum_cents = sum;
            totals.count += 1;
            Verdict::Keep
        }
        None => Verdict::Failed(format!(
            "aggregate {name}: the sum overflows with {amount} cents"
        )),
    }
}

/// Drops events whose id was seen recently. Memory is bounded by `window`:
/// ids are remembered as 64-bit hashes in two generations of `window / 2`
/// each; when the current generation fills, the older one is cleared and
/// the two swap. An id is therefore remembered for at least `window / 2` and
/// at most `window` later ids. (Dropping the oldest entry one at a time cost
/// a second hash-table operation per event; clearing a generation is a bulk
/// reset.) Two ids colliding in 64 bits would make one look repeated: at a
/// window of a million ids, about 1 in 10^13 per event. Events without an
/// id pass.
#[derive(Debug)]
pub struct Deduplicate {
    pub(crate) generation: usize,
    /// Id hashes, stored as their own hash (they are already well mixed).
    pub(crate) current: HashTable<u64>,
    pub(crate) previous: HashTable<u64>,
    pub(crate) hasher: FixedState,
}

impl Deduplicate {
    pub(crate) fn new(window: usize) -> Self {
        let generation = (window / 2).max(1);
        Self {
            generation,
            current: HashTable::with_capacity(generation),
            previous: HashTable::with_capacity(generation),
            hasher: FixedState::default(),
        }
    }

    /// Applies the step.
    #[inline]
    pub fn apply(&mut self, event: &mut Event) -> Verdict {
        let Some(id) = &event.event_id else {
            return Verdict::Keep;
        };
        let hash = self.hasher.hash_one(id.as_str());
        let same = |seen: &u64| *seen == hash;
        if self.previous.find(hash, same).is_some() {
            return Verdict::Duplicate;
        }
        match self.current.entry(hash, same, |seen| *seen) {
            Entry::Occupied(_) => return Verdict::Duplicate,
            Entry::Vacant(slot) => {
                slot.insert(hash);
            }
        }
        if self.current.len() >= self.generation {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        Verdict::Keep
    }
}
