//! The request span and the head-sampling decision taken before it exists.

use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The span a request runs in, after OpenTelemetry's RPC conventions: a
/// SERVER span named `orderflow.v1.OrderService/GetOrder` with `rpc.system`,
/// `rpc.service`, `rpc.method`, continuing the caller's trace when
/// `traceparent` is present. `MetricsLayer` sets `rpc.grpc.status_code`
/// (and the error status) when the RPC ends; the log formatter
/// (`telemetry::Correlated`) reads the trace and span ids only when a line
/// is written. A request [`Sampling`] leaves out gets no span at all, and
/// so does every request when nothing reads spans (no OpenTelemetry layer
/// installed): its log lines name the RPC all the same
/// (`telemetry::NamingRpc`, from `grpc_api::current_rpc`), and a span would
/// cost each request a subscriber entry, its formatted fields and two
/// filter lookups per poll (docs/benchmarks.md).
pub(super) fn request_span(request: &http::Request<()>, sampling: Sampling) -> tracing::Span {
    let path = request.uri().path();
    if !sampling.observed || !sampling.traces(path, request.headers()) {
        return tracing::Span::none();
    }
    let (service, method) = grpc_api::rpc_labels(path);
    // A known method's path is `/service/method`, the span name the
    // conventions ask for.
    let name = match service {
        "unknown" => "unknown/unknown",
        _ => path.trim_start_matches('/'),
    };
    let span = tracing::info_span!(
        "rpc",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    );
    if span.is_disabled() {
        return span;
    }
    if request.headers().contains_key("traceparent") {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);
    }
    span
}

/// Which requests get a span (`--trace-health-checks`,
/// `--trace-sample-ratio`), decided before any span exists, so a request
/// left out costs nothing for tracing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sampling {
    /// Trace health checks (probes every second would drown the traces).
    pub(super) health: bool,
    /// The share of requests with no sampling decision from the caller.
    pub(super) ratio: f64,
    /// Whether the OpenTelemetry layer is installed
    /// (`Settings::spans_observed`); without it requests get no span.
    pub(super) observed: bool,
}

impl Sampling {
    fn traces(self, path: &str, headers: &http::HeaderMap) -> bool {
        if !self.health && path.starts_with("/grpc.health.v1.Health/") {
            return false;
        }
        // W3C trace context: `00-<trace id>-<parent id>-<flags>`, bit 0 of
        // the flags meaning sampled. A malformed header decides nothing.
        let flags = headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit('-').next())
            .filter(|flags| flags.len() == 2)
            .and_then(|flags| u8::from_str_radix(flags, 16).ok());
        match flags {
            Some(flags) => flags & 1 == 1,
            None => self.ratio >= 1.0 || (self.ratio > 0.0 && rand::random::<f64>() < self.ratio),
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Sampling;

    fn with_traceparent(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", value.parse().unwrap());
        headers
    }

    fn sampling(health: bool, ratio: f64) -> Sampling {
        Sampling {
            health,
            ratio,
            observed: true,
        }
    }

    const PATH: &str = "/orderflow.v1.OrderService/GetOrder";
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";

    #[test]
    fn the_callers_flag_decides_whatever_the_ratio() {
        for ratio in [0.0, 0.5, 1.0] {
            let decide = sampling(false, ratio);
            let sampled = with_traceparent(&format!("{PARENT}-01"));
            let unsampled = with_traceparent(&format!("{PARENT}-00"));
            assert!(decide.traces(PATH, &sampled), "ratio {ratio}");
            assert!(!decide.traces(PATH, &unsampled), "ratio {ratio}");
        }
    }

    #[test]
    fn without_a_usable_traceparent_the_ratio_decides() {
        let none = http::HeaderMap::new();
        for headers in [
            none,
            with_traceparent("garbage"),
            with_traceparent(&format!("{PARENT}-zz")),
        ] {
            let all = sampling(false, 1.0);
            let nothing = sampling(false, 0.0);
            assert!(all.traces(PATH, &headers), "{headers:?}");
            assert!(!nothing.traces(PATH, &headers), "{headers:?}");
        }
        // A ratio between draws: over 2,000 requests, 0.5 traces some and
        // leaves some out.
        let half = sampling(false, 0.5);
        let traced = (0..2_000)
            .filter(|_| half.traces(PATH, &http::HeaderMap::new()))
            .count();
        assert!((600..=1_400).contains(&traced), "{traced} of 2000");
    }

    /// The field names of the span `request_span` opens for GetOrder.
    fn span_fields(observed: bool) -> Vec<&'static str> {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt as _;

        struct Fields(Arc<Mutex<Vec<&'static str>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Fields {
            fn on_new_span(
                &self,
                attrs: &tracing::span::Attributes<'_>,
                _: &tracing::span::Id,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                let names = attrs.metadata().fields().iter().map(|f| f.name());
                self.0.lock().unwrap().extend(names);
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Fields(Arc::clone(&seen)));
        let request = http::Request::builder().uri(PATH).body(()).unwrap();
        let sampling = Sampling {
            observed,
            ..sampling(false, 1.0)
        };
        tracing::subscriber::with_default(subscriber, || {
            drop(super::request_span(&request, sampling));
        });
        seen.lock().unwrap().clone()
    }

    #[test]
    fn requests_get_a_span_only_when_something_reads_it() {
        assert_eq!(span_fields(false), Vec::<&str>::new());
        let observed = span_fields(true);
        for field in [
            "otel.name",
            "otel.kind",
            "rpc.system",
            "rpc.service",
            "rpc.method",
        ] {
            assert!(
                observed.contains(&field),
                "{field} missing from {observed:?}"
            );
        }
    }

    #[test]
    fn health_checks_only_when_asked() {
        let sampled = with_traceparent(&format!("{PARENT}-01"));
        let path = "/grpc.health.v1.Health/Check";
        let off = sampling(false, 1.0);
        let on = sampling(true, 1.0);
        assert!(!off.traces(path, &sampled));
        assert!(on.traces(path, &sampled));
    }
}
