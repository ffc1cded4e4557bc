//! Prometheus metrics (`GET /metrics`, OpenMetrics text). Label values are
//! bounded: routes are fixed, events are the routed names (else `other`),
//! portals the configured member ids (else `unknown`).

use std::collections::HashSet;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::publish::SpoolStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    outcome: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
    member_id: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    events: Family<EventLabels, Counter>,
    publish_duration: Family<PathLabel, Histogram, fn() -> Histogram>,
    delivery_errors: Family<ErrorLabel, Counter>,
    spool_records: Gauge,
    spool_bytes: Gauge,
    spool_max_bytes: Gauge,
    producer_queue: Gauge,
    known_events: HashSet<String>,
    known_portals: HashSet<String>,
}

/// See [`Metrics::request_started`].
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Which fixed route a path belongs to (never the raw path: unbounded).
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/b24/events" => "/b24/events",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        _ => "other",
    }
}

impl Metrics {
    pub fn new(
        known_events: impl IntoIterator<Item = String>,
        known_portals: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut registry = Registry::with_prefix("b24_bridge");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, outcome and status",
            requests.clone(),
        );
        let request_duration =
            Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register_with_unit(
            "http_request_duration",
            "HTTP request duration, from the first byte to the answer",
            Unit::Seconds,
            request_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being handled",
            in_flight.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Events by name, portal and outcome (accepted, spooled or error code)",
            events.clone(),
        );
        let publish_duration =
            Family::<PathLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register_with_unit(
            "publish_duration",
            "Produce to broker acknowledgement, by path (direct or spool drain)",
            Unit::Seconds,
            publish_duration.clone(),
        );
        let delivery_errors = Family::<ErrorLabel, Counter>::default();
        registry.register(
            "kafka_delivery_errors",
            "Records the broker did not acknowledge, by librdkafka error code",
            delivery_errors.clone(),
        );
        let spool_records = Gauge::default();
        registry.register(
            "spool_records",
            "Records in the spool not yet delivered",
            spool_records.clone(),
        );
        let spool_bytes = Gauge::default();
        registry.register_with_unit(
            "spool_size",
            "Bytes the spool holds (counted against spool.max_bytes)",
            Unit::Bytes,
            spool_bytes.clone(),
        );
        let spool_max_bytes = Gauge::default();
        registry.register_with_unit(
            "spool_capacity",
            "spool.max_bytes",
            Unit::Bytes,
            spool_max_bytes.clone(),
        );
        let producer_queue = Gauge::default();
        registry.register(
            "kafka_producer_queue_messages",
            "Messages in the librdkafka producer queue awaiting delivery",
            producer_queue.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            in_flight,
            events,
            publish_duration,
            delivery_errors,
            spool_records,
            spool_bytes,
            spool_max_bytes,
            producer_queue,
            known_events: known_events.into_iter().collect(),
            known_portals: known_portals.into_iter().collect(),
        }
    }

    /// Counts the request as in flight until the guard is dropped (also
    /// when the client goes away and the handler is cancelled).
    pub fn request_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub fn request_finished(&self, path: &str, outcome: &str, status: u16, elapsed: Duration) {
        let route = route_label(path);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                outcome: outcome.to_owned(),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabel { route })
            .observe(elapsed.as_secs_f64());
    }

    pub fn event(&self, event: Option<&str>, member_id: Option<&str>, outcome: &str) {
        let event = event
            .map(str::to_ascii_uppercase)
            .filter(|e| self.known_events.contains(e))
            .unwrap_or_else(|| "other".into());
        let member_id = member_id
            .filter(|m| self.known_portals.contains(*m))
            .unwrap_or("unknown")
            .to_owned();
        self.events
            .get_or_create(&EventLabels {
                event,
                member_id,
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn published(&self, path: &'static str, elapsed: Duration) {
        self.publish_duration
            .get_or_create(&PathLabel { path })
            .observe(elapsed.as_secs_f64());
    }

    pub fn delivery_error(&self, code: &str) {
        // librdkafka error names are a closed set.
        self.delivery_errors
            .get_or_create(&ErrorLabel {
                code: code.chars().take(48).collect(),
            })
            .inc();
    }

    /// The exposition, with gauges sampled now.
    pub fn render(&self, spool: Option<SpoolStats>, producer_queue: i64) -> String {
        if let Some(s) = spool {
            self.spool_records.set(s.records as i64);
            self.spool_bytes.set(s.bytes as i64);
            self.spool_max_bytes.set(s.max_bytes as i64);
        }
        self.producer_queue.set(producer_queue);
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_bounded() {
        let m = Metrics::new(
            ["ONSIGNB2EDOCUMENTSTATUSCHANGED".to_owned()],
            ["m1".to_owned()],
        );
        drop(m.request_started());
        m.request_finished(
            "/random/path/123",
            "not_found",
            404,
            Duration::from_millis(1),
        );
        m.event(
            Some("onsignb2edocumentstatuschanged"),
            Some("m1"),
            "accepted",
        );
        m.event(Some("EVIL{label}"), Some("attacker"), "unauthorized");
        m.delivery_error("MsgTimedOut");
        m.published("direct", Duration::from_millis(3));
        let text = m.render(
            Some(SpoolStats {
                records: 2,
                bytes: 100,
                max_bytes: 1000,
            }),
            7,
        );
        assert!(text.contains(
            r#"b24_bridge_http_requests_total{route="other",outcome="not_found",status="404"} 1"#
        ));
        assert!(text.contains(
            r#"b24_bridge_events_total{event="ONSIGNB2EDOCUMENTSTATUSCHANGED",member_id="m1",outcome="accepted"} 1"#
        ));
        assert!(text.contains(
            r#"b24_bridge_events_total{event="other",member_id="unknown",outcome="unauthorized"} 1"#
        ));
        assert!(!text.contains("random") && !text.contains("attacker") && !text.contains("EVIL"));
        assert!(text.contains("b24_bridge_http_requests_in_flight 0"));
        assert!(text.contains(r#"b24_bridge_kafka_delivery_errors_total{code="MsgTimedOut"} 1"#));
        assert!(text.contains("b24_bridge_spool_records 2"));
        assert!(text.contains("b24_bridge_spool_size_bytes 100"));
        assert!(text.contains("b24_bridge_kafka_producer_queue_messages 7"));
        assert!(text.contains("b24_bridge_publish_duration_seconds_bucket"));
        assert!(text.contains("b24_bridge_http_request_duration_seconds_count{route=\"other\"} 1"));
    }
}
