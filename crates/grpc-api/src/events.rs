//! `orderflow.v1.EventService`: events into the transform engine through
//! the event log, each answered once durable (PublishEvent and PublishEvents
//! under the overflow policy, a stream's events gathered into log batches;
//! PublishEventBatch and StreamEventBatches a batch at a time, exactly once
//! per producer sequence), and the stored events out again (SubscribeEvents,
//! in `crate::subscribe`).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use transform_engine::{Admission, Ingest, LogBatch, LogError, LogIngest, OverflowPolicy, Pending};

use crate::audit::Trail;
use crate::convert;
use crate::proto::event_service_server::EventService;
use crate::proto::{
    EventBatchAck, PipelineStats, PublishEventResponse, PublishEventsResponse,
    SubscribeEventsRequest,
};
use crate::status::{self, Reason};
use crate::wire::{Event, EventBatch};

/// Batches a stream may have in flight (enqueued, not yet acknowledged):
/// the stream reads ahead this far while earlier batches are appended.
const STREAM_WINDOW: usize = 32;

/// Most events of a PublishEvents stream in one log batch: what the client
/// has already sent when the stream is read goes into the log together, one
/// row and one share of the backlog, instead of a row each.
const EVENTS_PER_BATCH: usize = 256;
// The log's bound is never below one whole batch (`MAX_BATCH_EVENTS`), so a
// gathered batch always fits in it.
const _: () = assert!(EVENTS_PER_BATCH <= transform_engine::MAX_BATCH_EVENTS);

/// The event service in front of an engine's ingest and the event store.
pub struct EventApi {
    ingest: Ingest,
    log: Option<(LogIngest, Option<Duration>)>,
    /// Why events go elsewhere: this process does not take them at all.
    elsewhere: Option<String>,
    stream_idle: Duration,
    feed: crate::subscribe::Feed,
}

impl EventApi {
    /// How long a client stream may go without sending a message, by
    /// default, before the server ends it.
    pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

    /// Serves `ingest`, and subscriptions to the events `store` holds; the
    /// acknowledged RPCs answer UNIMPLEMENTED until a log is attached with
    /// [`Self::with_log`].
    pub fn new(ingest: Ingest, store: storage::Database) -> Self {
        Self {
            ingest,
            log: None,
            elsewhere: None,
            stream_idle: Self::DEFAULT_STREAM_IDLE_TIMEOUT,
            feed: crate::subscribe::Feed::new(store),
        }
    }

    /// Ends a client stream (PublishEvents, StreamEventBatches) that sends
    /// nothing for `idle` with DEADLINE_EXCEEDED, so idle clients cannot
    /// hold streams open for ever. Time the server spends pushing back (a
    /// full backlog) does not count.
    #[must_use]
    pub fn with_stream_idle_timeout(mut self, idle: Duration) -> Self {
        self.stream_idle = idle;
        self
    }

    /// Serves acknowledged ingest through `log`. A unary PublishEventBatch
    /// waits up to `wait` for room in a full backlog (`None`: as long as it
    /// takes), then answers RESOURCE_EXHAUSTED; a stream waits as long as
    /// it takes, and stops reading meanwhile.
    #[must_use]
    pub fn with_log(mut self, log: LogIngest, wait: Option<Duration>) -> Self {
        self.log = Some((log, wait));
        self
    }

    /// Takes no events, for `why`: every ingest RPC answers UNAVAILABLE
    /// `EVENT_LOG_UNAVAILABLE` with it (a replica that does not hold the
    /// database event log's lease; it still serves subscriptions).
    #[must_use]
    pub fn elsewhere(mut self, why: String) -> Self {
        self.log = None;
        self.elsewhere = Some(why);
        self
    }

    /// UNAVAILABLE if this process takes no events.
    fn takes_events(&self) -> Result<(), Status> {
        match &self.elsewhere {
            None => Ok(()),
            Some(why) => Err(status::error(Reason::EventLogUnavailable, why.clone()).status()),
        }
    }

    /// Offers events of PublishEvent(s), together: through the event log
    /// when one is attached (durable once the returned [`Pending`] says
    /// so), waiting for room in its backlog as the overflow policy says
    /// (`block`: as long as it takes; `block-timeout`: that long;
    /// `drop-newest` and `dead-letter`: not at all), and each shed by the
    /// policy when the backlog stays full. Without a log, into the engine's
    /// queues, one by one.
    async fn offer(&self, events: Vec<domain::Event>) -> Result<Offered, Status> {
        self.takes_events()?;
        let Some((log, _)) = &self.log else {
            let mut admissions = Vec::with_capacity(events.len());
            for event in events {
                admissions.push(self.ingest.submit(event).await.map_err(status::ingest)?);
            }
            return Ok(Offered::Settled(admissions));
        };
        let wait = match self.ingest.policy() {
            OverflowPolicy::Block => None,
            OverflowPolicy::BlockTimeout(wait) => Some(wait),
            OverflowPolicy::DropNewest | OverflowPolicy::DeadLetter => Some(Duration::ZERO),
        };
        let batch = LogBatch {
            producer: None,
            events,
        };
        match log.offer(batch, wait).await {
            Ok(pending) => Ok(Offered::Queued(pending)),
            Err((LogError::Full(_), batch)) => Ok(Offered::Settled(
                batch
                    .events
                    .into_iter()
                    .map(|event| self.ingest.shed(event))
                    .collect(),
            )),
            Err((error, _)) => Err(status::log_event(error)),
        }
    }

    fn log(&self) -> Result<&(LogIngest, Option<Duration>), Status> {
        self.takes_events()?;
        self.log.as_ref().ok_or_else(|| {
            status::error(
                Reason::AcknowledgedIngestDisabled,
                "acknowledged ingest is not configured",
            )
            .status()
        })
    }
}

/// The next message of a client stream: `None` at its end, and
/// DEADLINE_EXCEEDED when the client sent nothing for `idle`.
async fn next_message<T>(stream: &mut Streaming<T>, idle: Duration) -> Result<Option<T>, Status> {
    match tokio::time::timeout(idle, stream.message()).await {
        Ok(message) => message.map_err(crate::layers::stream_error),
        Err(_) => Err(status::error(
            Reason::StreamIdle,
            format!("no message for {idle:?}; the server closed the idle stream"),
        )
        .meta("idle_timeout", format!("{}s", idle.as_secs_f64()))
        .status()),
    }
}

/// `error`, its message saying how many events of the stream were accepted
/// before it (they stay accepted); code and details kept.
fn after_accepted(error: &Status, accepted: u64) -> Status {
    status::with_message(
        error,
        format!("{} ({accepted} events accepted before it)", error.message()),
    )
}

/// What became of events of PublishEvent(s).
enum Offered {
    /// On their way into the event log: accepted once durable.
    Queued(Pending),
    /// Settled at once, each: queued in the engine (no log attached), or
    /// shed by the overflow policy.
    Settled(Vec<Admission>),
}

/// The events of a PublishEvents stream that its client has sent so far,
/// up to [`EVENTS_PER_BATCH`], without waiting for more than the first: converted, with
/// the status that ends the stream if one came after them (a bad event, a
/// broken stream), and whether the stream ended.
struct Gathered {
    events: Vec<domain::Event>,
    failed: Option<Status>,
    ended: bool,
}

async fn gather(stream: &mut Streaming<Event>, idle: Duration, index: &mut usize) -> Gathered {
    let mut gathered = Gathered {
        events: Vec::new(),
        failed: None,
        ended: false,
    };
    let mut next = match next_message(stream, idle).await {
        Ok(Some(message)) => Some(message),
        Ok(None) => {
            gathered.ended = true;
            return gathered;
        }
        Err(status) => {
            gathered.failed = Some(status);
            return gathered;
        }
    };
    while let Some(message) = next.take() {
        match convert::event_from_wire(message, Some(*index)) {
            Ok(event) => gathered.events.push(event),
            Err(invalid) => {
                gathered.failed = Some(invalid);
                return gathered;
            }
        }
        *index += 1;
        if gathered.events.len() >= EVENTS_PER_BATCH {
            break;
        }
        // What is already here: the stream polled once, never waited on.
        let ready = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::pin::Pin::new(&mut *stream).poll_next(cx))
        })
        .await;
        match ready {
            std::task::Poll::Pending => {}
            std::task::Poll::Ready(Some(Ok(message))) => next = Some(message),
            std::task::Poll::Ready(None) => gathered.ended = true,
            std::task::Poll::Ready(Some(Err(status))) => {
                gathered.failed = Some(crate::layers::stream_error(status));
            }
        }
    }
    gathered
}

/// Notes a validated batch in the call's audit trail.
fn audit_batch(trail: &Trail, batch: &LogBatch, sequence: u64) {
    let producer = batch.producer.as_ref().map_or("", |(id, _)| id.as_str());
    trail.batch(producer, sequence, batch.events.len() as u64);
}

/// One place in a stream's ack order.
enum Next {
    /// A batch on its way into the log, with its sequence.
    Ack(u64, Pending),
    /// The stream's end: this status after every ack before it.
    Fail(Status),
}

#[tonic::async_trait]
impl EventService for EventApi {
    async fn publish_events(
        &self,
        request: Request<Streaming<Event>>,
    ) -> Result<Response<PublishEventsResponse>, Status> {
        let trail = Trail::of(&request);
        let mut stream = request.into_inner();
        let mut counts = PublishEventsResponse::default();
        // Batches on their way into the log, oldest first: `accepted` counts
        // their events only once they are durable.
        let mut on_their_way: VecDeque<Pending> = VecDeque::new();
        let mut index = 0usize;
        let mut failed = None;
        loop {
            let gathered = gather(&mut stream, self.stream_idle, &mut index).await;
            // Events before a bad one are offered; what was accepted before
            // it stays accepted, and the message says how many.
            if !gathered.events.is_empty() {
                trail.events(gathered.events.len() as u64);
                match self.offer(gathered.events).await {
                    Ok(Offered::Queued(pending)) => on_their_way.push_back(pending),
                    Ok(Offered::Settled(admissions)) => {
                        for admission in admissions {
                            match admission {
                                Admission::Accepted => counts.accepted += 1,
                                Admission::Dropped => counts.dropped += 1,
                                Admission::DeadLettered => counts.dead_lettered += 1,
                            }
                        }
                    }
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
            if let Some(error) = gathered.failed {
                failed = Some(error);
                break;
            }
            if gathered.ended {
                break;
            }
            if on_their_way.len() >= STREAM_WINDOW
                && let Some(oldest) = on_their_way.pop_front()
            {
                match oldest.durable().await {
                    Ok(ack) => counts.accepted += ack.accepted,
                    Err(error) => {
                        failed = Some(status::log_event(error));
                        break;
                    }
                }
            }
        }
        // Every batch still on its way is waited for, also after an error,
        // so the answer counts each durable event.
        for pending in on_their_way {
            match pending.durable().await {
                Ok(ack) => counts.accepted += ack.accepted,
                Err(error) => {
                    failed.get_or_insert(status::log_event(error));
                }
            }
        }
        match failed {
            None => Ok(Response::new(counts)),
            Some(error) => Err(after_accepted(&error, counts.accepted)),
        }
    }

    async fn publish_event(
        &self,
        request: Request<Event>,
    ) -> Result<Response<PublishEventResponse>, Status> {
        let trail = Trail::of(&request);
        let event = convert::event_from_wire(request.into_inner(), None)?;
        trail.events(1);
        let admission = match self.offer(vec![event]).await? {
            Offered::Queued(pending) => {
                pending.durable().await.map_err(status::log_event)?;
                Admission::Accepted
            }
            Offered::Settled(admissions) => {
                admissions.into_iter().next().unwrap_or(Admission::Dropped)
            }
        };
        match admission {
            Admission::Accepted => Ok(Response::new(PublishEventResponse { accepted: true })),
            Admission::Dropped => Err(status::error(
                Reason::EventDropped,
                "no room for the event (the event backlog is full): it was dropped",
            )
            .retry_after(status::RETRY_OVERLOADED)
            .status()),
            Admission::DeadLettered => Err(status::error(
                Reason::EventDeadLettered,
                "no room for the event (the event backlog is full): it goes to the dead-letter store",
            )
            .retry_after(status::RETRY_OVERLOADED)
            .status()),
        }
    }

    async fn publish_event_batch(
        &self,
        request: Request<EventBatch>,
    ) -> Result<Response<EventBatchAck>, Status> {
        let (log, wait) = self.log()?;
        let trail = Trail::of(&request);
        let message = request.into_inner();
        let sequence = message.sequence;
        let batch = convert::event_batch_from_wire(message)?;
        audit_batch(&trail, &batch, sequence);
        let ack = log.submit(batch, *wait).await.map_err(status::log)?;
        Ok(Response::new(EventBatchAck {
            sequence,
            accepted: ack.accepted,
            duplicate: ack.duplicate,
        }))
    }

    type StreamEventBatchesStream = ReceiverStream<Result<EventBatchAck, Status>>;

    async fn stream_event_batches(
        &self,
        request: Request<Streaming<EventBatch>>,
    ) -> Result<Response<Self::StreamEventBatchesStream>, Status> {
        let (log, _) = self.log()?;
        let log = log.clone();
        let idle = self.stream_idle;
        let trail = Trail::of(&request);
        let mut inbound = request.into_inner();
        let (next, mut in_order) = mpsc::channel::<Next>(STREAM_WINDOW);
        let (acks, outbound) = mpsc::channel(STREAM_WINDOW);
        // Reads, validates and enqueues in order. Waiting for room in a
        // full backlog stops the reading, so HTTP/2 flow control pushes
        // back on the client.
        tokio::spawn(async move {
            loop {
                let step = match next_message(&mut inbound, idle).await {
                    Ok(Some(message)) => {
                        let sequence = message.sequence;
                        match convert::event_batch_from_wire(message) {
                            Ok(batch) => {
                                audit_batch(&trail, &batch, sequence);
                                match log.enqueue(batch, None).await {
                                    Ok(pending) => Next::Ack(sequence, pending),
                                    Err(error) => Next::Fail(status::log(error)),
                                }
                            }
                            Err(invalid) => Next::Fail(invalid),
                        }
                    }
                    Ok(None) => break,
                    Err(error) => Next::Fail(error),
                };
                let last = matches!(step, Next::Fail(_));
                if next.send(step).await.is_err() || last {
                    break;
                }
            }
        });
        // Answers in the order sent, each once durable.
        tokio::spawn(async move {
            while let Some(step) = in_order.recv().await {
                let answer = match step {
                    Next::Ack(sequence, pending) => pending
                        .durable()
                        .await
                        .map(|ack| EventBatchAck {
                            sequence,
                            accepted: ack.accepted,
                            duplicate: ack.duplicate,
                        })
                        .map_err(status::log),
                    Next::Fail(status) => Err(status),
                };
                let last = answer.is_err();
                if acks.send(answer).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(outbound)))
    }

    type SubscribeEventsStream = crate::subscribe::Pages;

    async fn subscribe_events(
        &self,
        request: Request<SubscribeEventsRequest>,
    ) -> Result<Response<Self::SubscribeEventsStream>, Status> {
        let pages = crate::subscribe::subscribe(self.feed.clone(), request.into_inner()).await?;
        Ok(Response::new(pages))
    }

    async fn get_pipeline_stats(
        &self,
        _request: Request<()>,
    ) -> Result<Response<PipelineStats>, Status> {
        let s = self.ingest.stats();
        Ok(Response::new(PipelineStats {
            received: s.received,
            processed: s.processed,
            filtered: s.filtered,
            deduplicated: s.deduplicated,
            dropped: s.dropped,
            dead_lettered: s.dead_lettered,
            queue_depth: s.queue_depth,
            queue_capacity: s.queue_capacity,
            log_backlog: self.log.as_ref().map_or(0, |(log, _)| log.backlog()),
        }))
    }
}
