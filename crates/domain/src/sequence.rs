//! The producer sequence rule of acknowledged ingest, the one definition
//! every event log applies inside its append ("exactly-once retries" and
//! "no gaps" in the contract, as Kafka's idempotent producer).

/// What a log does with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceVerdict {
    /// Store it, and make `sequence` the producer's last durable one.
    Store,
    /// At or below the last durable sequence: a retry; store nothing.
    Duplicate,
    /// Past the last durable sequence + 1: store nothing, so a batch that
    /// failed can never be skipped over and later answered as a duplicate.
    Gap {
        /// The sequence the producer must send next.
        expected: u64,
    },
}

impl SequenceVerdict {
    /// The verdict on `sequence` from a producer whose last durable
    /// sequence is `last` (`None`: the log does not know the producer,
    /// whose first batch may carry any sequence).
    #[must_use]
    pub fn of(last: Option<u64>, sequence: u64) -> Self {
        match last {
            None => Self::Store,
            Some(last) if sequence <= last => Self::Duplicate,
            Some(last) if sequence - last > 1 => Self::Gap {
                expected: last.saturating_add(1),
            },
            Some(_) => Self::Store,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SequenceVerdict::{self, Duplicate, Gap, Store};

    #[test]
    fn sequences_are_new_duplicate_or_a_gap() {
        assert_eq!(
            SequenceVerdict::of(None, 7),
            Store,
            "a first batch: any sequence"
        );
        assert_eq!(SequenceVerdict::of(Some(6), 7), Store);
        assert_eq!(SequenceVerdict::of(Some(7), 7), Duplicate);
        assert_eq!(SequenceVerdict::of(Some(9), 7), Duplicate);
        assert_eq!(SequenceVerdict::of(Some(5), 7), Gap { expected: 6 });
        assert_eq!(SequenceVerdict::of(Some(u64::MAX - 1), u64::MAX), Store);
    }
}
