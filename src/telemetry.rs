//! Logging: one subscriber (human or JSON), a request id on every line of a
//! request, and exactly one summary line per request. Secrets never reach
//! here: handlers only record key names, ids and our own error texts.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use tracing::{Instrument, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::http::{ApiError, AppState, RequestLog};
use crate::settings::{LogFormat, LogSettings};

mod json;
pub mod output;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
const MAX_REQUEST_ID_LEN: usize = 128;

/// A subscriber writing to `writer`. `RUST_LOG` overrides `log.level`.
pub fn subscriber<W>(settings: &LogSettings, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    if json {
        Box::new(
            builder
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(json::JsonLines)
                .finish(),
        )
    } else {
        Box::new(builder.with_ansi(std::io::stdout().is_terminal()).finish())
    }
}

/// Installs the process-wide subscriber. Lines are formatted on the
/// request's thread and appended to a shared buffer that a background thread
/// writes to stdout every 50 ms ([`output`]): no syscall and no cross-thread
/// wake-up per line, and no line is dropped. Keep the guard until exit: it
/// writes what is pending.
pub fn init(settings: &LogSettings) -> output::OutputGuard {
    let (writer, guard) = output::batched(std::io::stdout());
    let _ = INSTALLED.set(writer.clone());
    let _ = tracing::subscriber::set_global_default(subscriber(settings, writer));
    guard
}

static INSTALLED: OnceLock<output::BatchWriter> = OnceLock::new();

/// Writes the pending log lines now: for paths that end the process with
/// `std::process::exit` (no destructors run).
pub fn flush_logs() {
    if let Some(writer) = INSTALLED.get() {
        writer.flush();
    }
}

/// An incoming `X-Request-Id` is kept when it is short and made of safe
/// characters (it ends up in logs and headers); otherwise one is generated.
pub fn request_id(incoming: Option<&HeaderValue>) -> String {
    incoming
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= MAX_REQUEST_ID_LEN
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(str::to_owned)
        .unwrap_or_else(generated_request_id)
}

/// 32 hex digits: a random per-process prefix, then a counter passed through
/// a keyed bijection (so ids stay unique but do not reveal how many requests
/// the process has served). No `getrandom` syscall per request (a v4 UUID
/// per request was one).
fn generated_request_id() -> String {
    static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (prefix, key) = *KEYS.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}{:016x}", mix(n ^ key))
}

/// SplitMix64's finaliser: a bijection on u64 that scrambles neighbours.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Middleware: a request span carrying only the request id (so every line
/// of the request has it), `X-Request-Id` on the response, metrics, and one
/// summary line per request with what the handler learnt. The fields go on
/// that one event rather than on the span: recording into spans costs a
/// formatting pass per field and, with JSON output, a re-parse per line.
pub async fn request_telemetry(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request_id(req.headers().get(REQUEST_ID_HEADER));
    let span = tracing::info_span!("request", request_id = %id);
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.publisher.metrics().clone());
    let _in_flight = metrics.as_ref().map(|m| m.request_started());
    let path = req.path().to_owned();
    let method = req.method().clone();
    let result = next.call(req).instrument(span.clone()).await;
    let mut res = match result {
        Ok(res) => res,
        Err(e) => {
            if let Some(m) = &metrics {
                m.request_finished(&path, "internal_error", 500, started.elapsed());
            }
            return Err(e);
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    let log = res.request().extensions().get::<RequestLog>().cloned();
    let log = log.unwrap_or_else(|| RequestLog {
        outcome: res
            .response()
            .error()
            .and_then(|e| e.as_error::<ApiError>())
            .map(ApiError::code)
            .unwrap_or(if status < 400 { "ok" } else { "error" }),
        ..Default::default()
    });
    if let Some(m) = &metrics {
        m.request_finished(&path, log.outcome, status, elapsed);
    }
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    macro_rules! finished {
        ($level:ident) => {
            span.in_scope(|| {
                tracing::$level!(
                    method = %method,
                    path = %path,
                    status,
                    latency_ms,
                    outcome = log.outcome,
                    event = log.event.as_deref(),
                    member_id = log.member_id.as_deref(),
                    key = log.key.as_deref(),
                    event_id = log.event_id.as_deref(),
                    error = log.error.as_deref(),
                    "request finished"
                )
            })
        };
    }
    if status >= 500 {
        finished!(error);
    } else if status >= 400 {
        finished!(warn);
    } else {
        finished!(info);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_safe() {
        let ok = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(request_id(Some(&ok)), "abc-123_x.y:z");
        let bad = HeaderValue::from_static("a b");
        assert_ne!(request_id(Some(&bad)), "a b");
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_eq!(request_id(Some(&long)).len(), 32);
        assert_eq!(request_id(None).len(), 32);
        let a = request_id(None);
        let b = request_id(None);
        assert_ne!(a, b);
        assert_eq!(a[..16], b[..16], "one prefix per process");
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        // Consecutive ids differ in many digits, not just the last.
        let differing = a[16..].bytes().zip(b[16..].bytes()).filter(|(x, y)| x != y);
        assert!(differing.count() > 4, "{a} {b}");
    }
}
