//! The event log on NATS JetStream, for several replicas
//! (`ORDERFLOW_EVENT_LOG=nats://host:4222`).
//!
//! - **Append**: each batch is one message on the stream's subject, its
//!   events as canonical JSON lines, or, with `ORDERFLOW_NATS_LOG_FORMAT=
//!   binary`, in the database log's binary form (`Event::encode_batch`, a
//!   third of the bytes) marked by the header [`FORMAT_HEADER`]. Every
//!   replica reads both, so a cluster switches in two steps: upgrade every
//!   replica (all read both forms), then set `binary`. A replica of an
//!   earlier release would terminate a binary message it cannot read.
//!   A batch with a producer id carries
//!   `Nats-Msg-Id: <producer_id>/<sequence>`, so a retry within the stream's
//!   duplicate window is acknowledged by JetStream as a duplicate and stored
//!   once. The client's ack waits for JetStream's publish acknowledgement
//!   (the message is stored, replicated as the stream is configured).
//! - **Consume**: every replica pulls from one durable consumer, so the work
//!   is shared. A message is acknowledged to JetStream only after its
//!   outputs are committed, and the commit records the message's stream
//!   sequence in the same database transaction (`log_applied`); a message
//!   redelivered after a crash, or to a second replica while the first was
//!   still committing, is recognised and stores nothing twice.
//! - **Bounded**: the stream holds at most `max_batches` unconsumed batches
//!   and `max_bytes` bytes (work-queue retention, discard new): an append
//!   past either fails, and the client hears UNAVAILABLE
//!   (`EVENT_LOG_UNAVAILABLE`) with a retry delay. Both bounds are applied
//!   on start, to a stream that already exists too.
//!   Each replica's permits bound only its own appends in flight
//!   ([`EventLog::shared`]).
//! - **Counted per replica**: a replica's pipeline counters cover what it
//!   appended and what it processed, which differ when the work is shared;
//!   the sum over replicas balances.
//!
//! The stream and the consumer are created on start if missing, with the
//! settings in [`NatsSettings`]; existing ones are used as they are, but for
//! the stream's two bounds.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::sinks::Output;
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use domain::SequenceVerdict;
use domain::{DeadLetter, Event};
use jetstream::message::PublishMessage;
use storage::{Database, LogCommit};
use tokio_stream::StreamExt as _;
use transform_engine::{Appended, EventLog, LogBatch, LogRecord, SinkError, SinkErrorKind};

/// Where the stream and consumer live, and their limits.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// `nats://host:port`.
    pub url: String,
    /// The stream's name; its subject is `orderflow.events.<name>`.
    pub stream: String,
    /// Most batches in the stream not yet consumed.
    pub max_batches: i64,
    /// Most bytes the stream holds (its messages and their headers).
    pub max_bytes: i64,
    /// How long JetStream remembers a `Nats-Msg-Id` for de-duplication.
    pub duplicate_window: Duration,
    /// How long a pulled message may stay unacknowledged before JetStream
    /// redelivers it (to any replica).
    pub ack_wait: Duration,
    /// Where processed events go (`ORDERFLOW_EVENT_SINK`, as for the
    /// database log): `blackhole` counts them without storing them (the
    /// applied sequences and dead letters are still stored).
    pub output: Output,
    /// How this replica writes batches (it reads both forms).
    pub format: NatsFormat,
}

/// How a replica writes batches to the stream (`ORDERFLOW_NATS_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NatsFormat {
    /// Canonical JSON lines: what every release reads (the default).
    #[default]
    Json,
    /// The binary form, under [`FORMAT_HEADER`]: set it once every replica
    /// runs a release that reads it.
    Binary,
}

/// The header naming a message's form; absent means JSON lines.
pub const FORMAT_HEADER: &str = "Orderflow-Log-Format";
/// [`FORMAT_HEADER`]'s value for the binary form.
const BINARY: &str = "binary";

impl NatsSettings {
    /// The durable consumer every replica shares.
    const CONSUMER: &'static str = "orderflow-pipeline";

    fn subject(&self) -> String {
        format!("orderflow.events.{}", self.stream)
    }
}

/// The log; see the module documentation.
pub struct NatsLog {
    context: jetstream::Context,
    consumer: jetstream::consumer::PullConsumer,
    subject: String,
    stream: String,
    db: Database,
    /// Pulled and not yet acknowledged, by stream sequence.
    pending: Mutex<BTreeMap<i64, Pulled>>,
    /// The client, for its connection state (health).
    client: async_nats::Client,
    output: Output,
    format: NatsFormat,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> SinkError {
    SinkError {
        message: format!("{what}: {error}"),
        kind: SinkErrorKind::Unavailable,
    }
}

impl NatsLog {
    /// Connects, and creates the stream and consumer if missing.
    ///
    /// # Errors
    /// When NATS cannot be reached or refuses the stream's configuration.
    pub async fn open(settings: &NatsSettings, db: Database) -> Result<Self, SinkError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .connect(settings.url.as_str())
            .await
            .map_err(|e| unavailable("cannot connect to NATS", e))?;
        let context = jetstream::new(client.clone());
        let mut stream = context
            .get_or_create_stream(jetstream::stream::Config {
                name: settings.stream.clone(),
                subjects: vec![settings.subject()],
                retention: jetstream::stream::RetentionPolicy::WorkQueue,
                storage: jetstream::stream::StorageType::File,
                discard: jetstream::stream::DiscardPolicy::New,
                max_messages: settings.max_batches,
                max_bytes: settings.max_bytes,
                duplicate_window: settings.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("cannot create the JetStream stream", e))?;
        // An existing stream keeps its other settings, but its bounds are
        // this replica's: a stream created before the byte bound existed
        // (or with other bounds) gets them now.
        let current = stream.cached_info().config.clone();
        if current.max_messages != settings.max_batches || current.max_bytes != settings.max_bytes {
            tracing::info!(
                stream = %settings.stream,
                max_batches = settings.max_batches,
                max_bytes = settings.max_bytes,
                was_max_batches = current.max_messages,
                was_max_bytes = current.max_bytes,
                "updating the JetStream stream's bounds"
            );
            context
                .update_stream(jetstream::stream::Config {
                    max_messages: settings.max_batches,
                    max_bytes: settings.max_bytes,
                    ..current
                })
                .await
                .map_err(|e| unavailable("cannot update the JetStream stream's bounds", e))?;
            stream = context
                .get_stream(settings.stream.as_str())
                .await
                .map_err(|e| unavailable("cannot read the JetStream stream", e))?;
        }
        let consumer = stream
            .get_or_create_consumer(
                NatsSettings::CONSUMER,
                jetstream::consumer::pull::Config {
                    durable_name: Some(NatsSettings::CONSUMER.to_owned()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: settings.ack_wait,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| unavailable("cannot create the JetStream consumer", e))?;
        Ok(Self {
            context,
            consumer,
            subject: settings.subject(),
            stream: settings.stream.clone(),
            db,
            pending: Mutex::new(BTreeMap::new()),
            client,
            output: settings.output,
            format: settings.format,
        })
    }

    /// Whether the connection to NATS is up now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Pulled>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A pulled message, and the (producer, sequence) its id names.
type Pulled = (jetstream::Message, Option<(String, u64)>);

/// The (producer, sequence) a message's `Nats-Msg-Id` names, if any.
fn producer_of(message: &async_nats::Message) -> Option<(String, u64)> {
    let id = message.headers.as_ref()?.get("Nats-Msg-Id")?.as_str();
    let (producer, sequence) = id.rsplit_once('/')?;
    Some((producer.to_owned(), sequence.parse().ok()?))
}

/// A batch as a message, in `format`.
fn message(events: &[Event], format: NatsFormat) -> Result<PublishMessage, SinkError> {
    Ok(match format {
        NatsFormat::Json => {
            let lines = Event::json_lines(events, true).map_err(|e| SinkError {
                message: e.to_string(),
                kind: SinkErrorKind::Rejected,
            })?;
            PublishMessage::build().payload(Bytes::from(lines))
        }
        NatsFormat::Binary => {
            let mut body = Vec::new();
            Event::encode_batch(events, &mut body);
            PublishMessage::build()
                .payload(Bytes::from(body))
                .header(FORMAT_HEADER, BINARY)
        }
    })
}

/// A message's events, in whichever form its header names.
fn events(message: &async_nats::Message) -> Result<Vec<Event>, String> {
    let format = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(FORMAT_HEADER))
        .map(|value| value.as_str());
    match format {
        None => Event::parse_json_lines(&message.payload).map_err(|e| e.to_string()),
        Some(BINARY) => Event::decode_batch(&message.payload).map_err(|e| e.to_string()),
        Some(other) => Err(format!("unknown {FORMAT_HEADER} {other:?}")),
    }
}

/// How long a pull waits for messages before answering with fewer.
const FETCH_WAIT: Duration = Duration::from_millis(100);

impl EventLog for NatsLog {
    async fn append(&self, batches: &[LogBatch]) -> Result<Vec<Appended>, SinkError> {
        // The client would buffer publishes while it reconnects and answer
        // only when its request times out; a client must hear at once that
        // nothing was stored.
        if !self.is_connected() {
            return Err(unavailable("NATS is unreachable", "reconnecting"));
        }
        // The producers' records decide, before anything is published,
        // what is a duplicate (committed already, however long ago) and
        // what skips ahead (a gap); the stream's duplicate window only
        // catches retries of batches published and not yet consumed.
        let mut producers: Vec<String> = batches
            .iter()
            .filter_map(|b| b.producer.as_ref().map(|(p, _)| p.clone()))
            .collect();
        producers.sort_unstable();
        producers.dedup();
        let mut records = if producers.is_empty() {
            std::collections::HashMap::new()
        } else {
            self.db
                .producer_records(&producers)
                .await
                .map_err(crate::sinks::sink_error)?
        };
        let mut outcomes: Vec<Option<Appended>> = Vec::with_capacity(batches.len());
        let mut acks = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut message = message(&batch.events, self.format)?;
            if let Some((producer, sequence)) = &batch.producer {
                let record = records.entry(producer.clone()).or_default();
                match record.verdict(*sequence) {
                    SequenceVerdict::Duplicate => {
                        outcomes.push(Some(Appended::Duplicate));
                        continue;
                    }
                    SequenceVerdict::Gap { expected } => {
                        outcomes.push(Some(Appended::Gap { expected }));
                        continue;
                    }
                    SequenceVerdict::Store => {}
                }
                // The next batch of this group is checked against this one.
                record.appended = record.appended.max(Some(*sequence));
                message = message.message_id(format!("{producer}/{sequence}"));
            }
            // Publish all, then await the acks: JetStream stores them in
            // order and answers each.
            let ack = self
                .context
                .send_publish(self.subject.clone(), message)
                .await
                .map_err(|e| unavailable("publishing to JetStream failed", e))?;
            // (A full stream answers in the ack below.)
            acks.push((batch.producer.clone(), ack));
            outcomes.push(None);
        }
        let mut published = Vec::new();
        let mut answered = Vec::with_capacity(acks.len());
        for (producer, ack) in acks {
            let ack = ack.await.map_err(|e| {
                let text = e.to_string();
                if text.contains("maximum messages") || text.contains("maximum bytes") {
                    // Refused, nothing stored: the stream is at its bound.
                    unavailable("the JetStream event stream is full; retry later", text)
                } else {
                    SinkError {
                        // Sent, not confirmed: JetStream may have stored it;
                        // a retry with the same id is de-duplicated.
                        message: format!("JetStream did not confirm the publish: {text}"),
                        kind: SinkErrorKind::OutcomeUnknown,
                    }
                }
            })?;
            // In the stream either way (a duplicate: from an earlier try).
            published.extend(producer);
            answered.push(if ack.duplicate {
                Appended::Duplicate
            } else {
                Appended::New {
                    position: i64::try_from(ack.sequence).unwrap_or(i64::MAX),
                }
            });
        }
        if !published.is_empty()
            && let Err(error) = self.db.note_appended(&published).await
        {
            // The next batch of such a producer may be refused as a gap
            // until a retry of this one (a duplicate) records it again.
            tracing::warn!(%error, "could not record the producers' published sequences");
        }
        let mut answered = answered.into_iter();
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome
                    .or_else(|| answered.next())
                    .ok_or_else(|| SinkError {
                        message: "JetStream answered fewer publishes than were sent".to_owned(),
                        kind: SinkErrorKind::OutcomeUnknown,
                    })
            })
            .collect()
    }

    async fn read(&self, _after: i64, limit: u32) -> Result<Vec<LogRecord>, SinkError> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(usize::try_from(limit).unwrap_or(64))
            .expires(FETCH_WAIT)
            .messages()
            .await
            .map_err(|e| unavailable("pulling from JetStream failed", e))?;
        let mut fetched = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| unavailable("pulling from JetStream failed", e))?;
            let sequence = message
                .info()
                .map_err(|e| unavailable("a JetStream message without its metadata", e))?
                .stream_sequence;
            fetched.push((i64::try_from(sequence).unwrap_or(i64::MAX), message));
        }
        if fetched.is_empty() {
            return Ok(Vec::new());
        }
        let sequences: Vec<i64> = fetched.iter().map(|(s, _)| *s).collect();
        let applied = self
            .db
            .applied_sequences(&self.stream, &sequences)
            .await
            .map_err(crate::sinks::sink_error)?;
        let batches: Vec<(String, u64)> =
            fetched.iter().filter_map(|(_, m)| producer_of(m)).collect();
        let committed = if batches.is_empty() {
            std::collections::HashSet::new()
        } else {
            self.db
                .applied_batches(&batches)
                .await
                .map_err(crate::sinks::sink_error)?
        };
        let mut records = Vec::with_capacity(fetched.len());
        let mut pending = Vec::with_capacity(fetched.len());
        let mut taken: std::collections::HashSet<(String, u64)> = self
            .pending()
            .values()
            .filter_map(|(_, producer)| producer.clone())
            .collect();
        for (sequence, message) in fetched {
            if applied.contains(&sequence) {
                // Committed before (its ack was lost): acknowledge, skip.
                if let Err(error) = message.ack().await {
                    tracing::debug!(%error, sequence, "could not acknowledge an applied message");
                }
                continue;
            }
            if self.pending().contains_key(&sequence) {
                // Redelivered while this replica still holds it (its ack
                // wait ran out mid-commit): the held one is acknowledged
                // after its commit; processing this one too would store
                // its outputs twice.
                continue;
            }
            let producer = producer_of(&message);
            if let Some((id, number)) = &producer {
                // A copy published again after the duplicate window: its
                // batch is committed, or another copy is in hand here.
                if committed.contains(&(id.clone(), *number))
                    || !taken.insert((id.clone(), *number))
                {
                    tracing::info!(sequence, producer = %id, batch = number, "a batch published twice (after the duplicate window); skipping the copy");
                    if let Err(error) = message.ack().await {
                        tracing::debug!(%error, sequence, "could not acknowledge a duplicate message");
                    }
                    continue;
                }
            }
            let events = match events(&message) {
                Ok(events) => events,
                Err(error) => {
                    // Never written by orderflow: park it for good rather
                    // than redeliver it for ever.
                    tracing::error!(%error, sequence, "an unreadable message in the event stream; terminating it");
                    let _ = message.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            records.push(LogRecord::new(sequence, events));
            pending.push((sequence, (message, producer)));
        }
        self.pending().extend(pending);
        records.sort_by_key(|r| r.position);
        Ok(records)
    }

    async fn commit(
        &self,
        // JetStream's positions are its stream sequences, not a cursor:
        // each message's batch is checked against `log_applied` instead.
        _after: i64,
        through: i64,
        events: &[Event],
        letters: &[DeadLetter],
        // `read` terminates a message it cannot decode itself (it never
        // hands over a damaged record), so there is none to keep aside.
        _damaged: &[(i64, String)],
    ) -> Result<(), SinkError> {
        let taken: Vec<(i64, Pulled)> = {
            let mut pending = self.pending();
            let rest = pending.split_off(&(through.saturating_add(1)));
            let taken = std::mem::replace(&mut *pending, rest);
            taken.into_iter().collect()
        };
        let sequences: Vec<i64> = taken.iter().map(|(s, _)| *s).collect();
        let producers: Vec<(String, u64)> = taken
            .iter()
            .filter_map(|(_, (_, producer))| producer.clone())
            .collect();
        let events = match self.output {
            Output::Database => events,
            Output::Blackhole => &[],
        };
        let committed = self
            .db
            .commit_applied(&self.stream, &sequences, &producers, events, letters)
            .await;
        match committed {
            Ok(LogCommit::Committed) => {
                for (sequence, (message, _)) in taken {
                    // A lost ack means a redelivery, which `read` filters.
                    if let Err(error) = message.ack().await {
                        tracing::debug!(%error, sequence, "could not acknowledge a committed message");
                    }
                }
                Ok(())
            }
            Ok(LogCommit::AlreadyCommitted | LogCommit::Moved { .. } | LogCommit::Overtaken) => {
                // Another replica committed some of these meanwhile:
                // nothing was stored; let JetStream deliver them again, and
                // `read` sorts the applied from the rest.
                for (_, (message, _)) in taken {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                }
                Ok(())
            }
            Err(error) => {
                // Not committed (or unknown): keep them for the repeat.
                self.pending().extend(taken);
                Err(crate::sinks::sink_error(error))
            }
        }
    }

    async fn cursor(&self) -> Result<i64, SinkError> {
        Ok(0)
    }

    /// Batches (messages) not yet acknowledged by any replica. The engine
    /// does not count a shared log's backlog as its own, so this serves
    /// only callers that want the stream's state.
    async fn backlog(&self) -> Result<u64, SinkError> {
        let info = self
            .consumer
            .get_info()
            .await
            .map_err(|e| unavailable("JetStream consumer info", e))?;
        Ok(info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(0))
    }

    fn shared(&self) -> bool {
        true
    }
}
