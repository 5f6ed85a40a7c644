//! `orderflow.v1.EventService`: events into the transform engine.

use tonic::{Request, Response, Status, Streaming};
use transform_engine::{Admission, Ingest};

use crate::observe::observe;
use crate::proto::event_service_server::EventService;
use crate::proto::{Event, PipelineStats, PublishEventResponse, PublishEventsResponse};
use crate::{convert, status};

/// The event service in front of an engine's ingest.
pub struct EventApi {
    ingest: Ingest,
}

impl EventApi {
    /// Serves `ingest`.
    pub fn new(ingest: Ingest) -> Self {
        Self { ingest }
    }
}

#[tonic::async_trait]
impl EventService for EventApi {
    async fn publish_events(
        &self,
        request: Request<Streaming<Event>>,
    ) -> Result<Response<PublishEventsResponse>, Status> {
        observe("PublishEvents", async {
            let mut stream = request.into_inner();
            let mut counts = PublishEventsResponse::default();
            let mut index = 0usize;
            while let Some(message) = stream
                .message()
                .await
                .map_err(crate::layers::stream_error)?
            {
                // A bad event ends the stream; what was accepted before it
                // stays accepted, and the message says how many.
                let event = convert::event_from_wire(message, &format!("events[{index}]."))
                    .map_err(|status| {
                        Status::invalid_argument(format!(
                            "{} ({} events accepted before it)",
                            status.message(),
                            counts.accepted
                        ))
                    })?;
                match self.ingest.submit(event).await.map_err(status::ingest)? {
                    Admission::Accepted => counts.accepted += 1,
                    Admission::Dropped => counts.dropped += 1,
                    Admission::DeadLettered => counts.dead_lettered += 1,
                }
                index += 1;
            }
            Ok(Response::new(counts))
        })
        .await
    }

    async fn publish_event(
        &self,
        request: Request<Event>,
    ) -> Result<Response<PublishEventResponse>, Status> {
        observe("PublishEvent", async {
            let event = convert::event_from_wire(request.into_inner(), "")?;
            match self.ingest.submit(event).await.map_err(status::ingest)? {
                Admission::Accepted => Ok(Response::new(PublishEventResponse { accepted: true })),
                Admission::Dropped => Err(Status::resource_exhausted(
                    "event queue full: the event was dropped",
                )),
                Admission::DeadLettered => Err(Status::resource_exhausted(
                    "event queue full: the event goes to the dead-letter store",
                )),
            }
        })
        .await
    }

    async fn get_pipeline_stats(
        &self,
        _request: Request<()>,
    ) -> Result<Response<PipelineStats>, Status> {
        observe("GetPipelineStats", async {
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
            }))
        })
        .await
    }
}
