//! [`KeyTable`]: the string-keyed table steps search for every event (an
//! enrich step's lookup table, an aggregate's keys), and [`Key`], a key as
//! read from an event.
//!
//! Three things keep a lookup cheap (measured in the pipeline benchmark,
//! docs/benchmarks.md): a small table is scanned, comparing lengths before
//! bytes, where hashing the key would cost more than the scan; keys are
//! compared by an inlined loop instead of a `memcmp` call, since they are
//! short; and a static key (a configured value an earlier enrich step set)
//! is remembered by address, so finding it again is one comparison.

use std::hash::BuildHasher;
use std::sync::Arc;

use domain::ArcStr;
use foldhash::fast::FixedState;
use hashbrown::HashTable;

/// Tables with at most this many entries are scanned; larger ones hashed.
const SCAN_AT_MOST: usize = 8;

/// Static keys remembered per table (direct-mapped by address).
const REMEMBERED: usize = 4;

/// A key as a step reads it from an event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'e> {
    text: &'e str,
    /// The text's address when it lives as long as the process (a static
    /// [`ArcStr`]): that address then names this text and no other, ever.
    address: Option<usize>,
}

impl<'e> Key<'e> {
    /// A key with no identity beyond its text.
    pub(crate) fn text(text: &'e str) -> Self {
        Self {
            text,
            address: None,
        }
    }

    /// A key held in `string`, remembered by address if it is static.
    pub(crate) fn of(string: &'e ArcStr) -> Self {
        Self {
            text: string,
            address: ArcStr::is_static(string).then(|| string.as_ptr() as usize),
        }
    }

    /// The key's text.
    pub(crate) fn as_str(&self) -> &'e str {
        self.text
    }
}

/// String keys with a value each, in the order they were added; an entry is
/// named by its position, which never changes (entries are never removed).
#[derive(Debug)]
pub(crate) struct KeyTable<V> {
    entries: Vec<(Arc<str>, V)>,
    /// Positions in `entries` by the key's hash; empty while the table is
    /// small enough to scan.
    index: HashTable<usize>,
    hasher: FixedState,
    /// `(address, position)` of static keys found before; address 0 (no
    /// string has it) marks an empty slot.
    remembered: [(usize, usize); REMEMBERED],
}

impl<V> Default for KeyTable<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: HashTable::new(),
            hasher: FixedState::default(),
            remembered: [(0, 0); REMEMBERED],
        }
    }
}

impl<V> KeyTable<V> {
    /// How many entries there are.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The position of `key`'s entry, if it has one.
    #[inline]
    pub(crate) fn find(&mut self, key: Key<'_>) -> Option<usize> {
        let Some(address) = key.address else {
            return self.find_text(key.text);
        };
        let slot = self.remembered.get_mut((address >> 4) % REMEMBERED)?;
        if slot.0 == address {
            return Some(slot.1);
        }
        let found = find_text(&self.entries, &self.index, &self.hasher, key.text)?;
        *slot = (address, found);
        Some(found)
    }

    /// The position of the entry for `text`, if it has one.
    #[inline]
    pub(crate) fn find_text(&self, text: &str) -> Option<usize> {
        find_text(&self.entries, &self.index, &self.hasher, text)
    }

    /// Adds an entry for `key`, which must not have one yet, and returns
    /// its position.
    pub(crate) fn push(&mut self, key: Arc<str>, value: V) -> usize {
        let position = self.entries.len();
        self.entries.push((key, value));
        let hasher = &self.hasher;
        let hash_of = |entries: &[(Arc<str>, V)], at: usize| {
            entries
                .get(at)
                .map_or(0, |(key, _)| hasher.hash_one(&**key))
        };
        if self.entries.len() == SCAN_AT_MOST + 1 {
            // Past scanning size: index every entry so far.
            for at in 0..self.entries.len() {
                let hash = hash_of(&self.entries, at);
                self.index
                    .insert_unique(hash, at, |&at| hash_of(&self.entries, at));
            }
        } else if self.entries.len() > SCAN_AT_MOST + 1 {
            let hash = hash_of(&self.entries, position);
            self.index
                .insert_unique(hash, position, |&at| hash_of(&self.entries, at));
        }
        position
    }

    /// The entry at `position`.
    #[inline]
    pub(crate) fn get(&self, position: usize) -> Option<&(Arc<str>, V)> {
        self.entries.get(position)
    }

    /// The value at `position`.
    #[inline]
    pub(crate) fn value_mut(&mut self, position: usize) -> Option<&mut V> {
        self.entries.get_mut(position).map(|(_, value)| value)
    }

    /// The entries from `position` on.
    pub(crate) fn entries_from(&self, position: usize) -> &[(Arc<str>, V)] {
        self.entries.get(position..).unwrap_or_default()
    }
}

impl<V> FromIterator<(Arc<str>, V)> for KeyTable<V> {
    /// Later entries for a key are dropped (configuration tables have
    /// unique keys already).
    fn from_iter<I: IntoIterator<Item = (Arc<str>, V)>>(entries: I) -> Self {
        let mut table = Self::default();
        for (key, value) in entries {
            if table.find_text(&key).is_none() {
                table.push(key, value);
            }
        }
        table
    }
}

#[inline]
fn find_text<V>(
    entries: &[(Arc<str>, V)],
    index: &HashTable<usize>,
    hasher: &FixedState,
    text: &str,
) -> Option<usize> {
    if entries.len() <= SCAN_AT_MOST {
        return entries.iter().position(|(key, _)| same(key, text));
    }
    index
        .find(hasher.hash_one(text), |&at| {
            entries.get(at).is_some_and(|(key, _)| same(key, text))
        })
        .copied()
}

/// Whether two short strings are equal: lengths first (a slice's length
/// needs no load), then the bytes in a loop the compiler inlines.
#[inline]
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(keys: &[&str]) -> KeyTable<usize> {
        keys.iter()
            .enumerate()
            .map(|(n, key)| (Arc::from(*key), n))
            .collect()
    }

    #[test]
    fn finds_each_key_whether_scanned_or_hashed() {
        for size in [0, 1, SCAN_AT_MOST, SCAN_AT_MOST + 1, 100] {
            let keys: Vec<String> = (0..size).map(|n| format!("key-{n}")).collect();
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let mut table = table(&refs);
            for (n, key) in keys.iter().enumerate() {
                assert_eq!(table.find(Key::text(key)), Some(n), "{key} of {size}");
                assert_eq!(table.get(n).map(|(k, _)| &**k), Some(key.as_str()));
            }
            assert_eq!(table.find(Key::text("key-")), None, "size {size}");
            assert_eq!(table.find(Key::text("absent")), None, "size {size}");
        }
    }

    #[test]
    fn a_static_key_is_found_again_by_address_and_others_by_text() {
        let revenue = ArcStr::from("revenue");
        revenue.leak();
        let session = ArcStr::from("session");
        session.leak();
        assert!(ArcStr::is_static(&revenue) && ArcStr::is_static(&session));
        let mut table = table(&["other", "revenue", "session"]);
        for _ in 0..3 {
            assert_eq!(table.find(Key::of(&revenue)), Some(1));
            assert_eq!(table.find(Key::of(&session)), Some(2));
        }
        // A counted string with the same text is found by its text.
        let counted = ArcStr::from("revenue");
        assert!(!ArcStr::is_static(&counted));
        assert_eq!(table.find(Key::of(&counted)), Some(1));
        // A static key the table lacks is not remembered as anything.
        let absent = ArcStr::from("absent");
        absent.leak();
        assert_eq!(table.find(Key::of(&absent)), None);
        assert_eq!(table.find(Key::of(&absent)), None);
    }

    #[test]
    fn a_later_duplicate_key_keeps_the_first_entry() {
        let table: KeyTable<u8> = [(Arc::from("a"), 1), (Arc::from("a"), 2)]
            .into_iter()
            .collect();
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(0).map(|(_, v)| *v), Some(1));
    }
}
