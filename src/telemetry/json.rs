//! The JSON line format: what `tracing-subscriber`'s JSON formatter writes
//! with flattened event fields and the current span, without its costs.
//!
//! `{"timestamp":"…Z","level":"INFO","message":"…",<event fields>,"span":{<span fields>,"name":"request"}}`
//!
//! The stock formatter re-parses the current span's stored fields with
//! serde_json on every line and goes through serde for every value; under
//! load that was a visible share of the per-request cost. Here the span's
//! fields are stored once as JSON text (by `JsonFields`) and spliced in
//! as they are, and values are escaped straight into the line buffer.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter; pair it with `fmt_fields(JsonFields::new())`.
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = time::OffsetDateTime::now_utc();
        write!(
            writer,
            "{{\"timestamp\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z\",\"level\":\"{}\"",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.microsecond(),
            event.metadata().level()
        )?;
        let mut visitor = FieldWriter {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut visitor);
        visitor.result?;
        if let Some(span) = ctx.lookup_current() {
            writer.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            let stored = extensions
                .get::<FormattedFields<JsonFields>>()
                .map(|f| f.fields.as_str())
                .unwrap_or_default();
            // `{"a":1,"b":2}` → `"a":1,"b":2,`
            let inner = stored
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .unwrap_or_default();
            if !inner.is_empty() {
                writer.write_str(inner)?;
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            write_json_str(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

struct FieldWriter<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl FieldWriter<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.out.write_char(',')?;
        write_json_str(self.out, field.name())?;
        self.out.write_char(':')
    }

    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| value(self.out));
        }
    }
}

impl Visit for FieldWriter<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| write_json_str(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.field(field, |w| write!(w, "{value}"));
        } else {
            self.field(field, |w| write!(w, "\"{value}\""));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(Escaping(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

fn write_json_str(w: &mut impl Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaping(w).write_str(s)?;
    w.write_char('"')
}

/// Writes through, escaping what JSON strings cannot hold as is.
struct Escaping<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let escaped = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if escaped.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escaped)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn fields_span_and_escapes_make_valid_json() {
        let got = lines(|| {
            let span = tracing::info_span!("request", request_id = "r-1");
            let _entered = span.enter();
            let evil = "quote\" back\\ nl\n tab\t bell\u{7} кириллица";
            tracing::warn!(
                status = 401u16,
                latency_ms = 1.5,
                neg = -3i64,
                ok = true,
                missing = None::<&str>,
                text = evil,
                shown = %"disp\"lay",
                debugged = ?Some("x"),
                "request {} finished",
                7
            );
        });
        assert_eq!(got.len(), 1);
        let line = &got[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "request 7 finished");
        assert_eq!(line["status"], 401);
        assert_eq!(line["latency_ms"], 1.5);
        assert_eq!(line["neg"], -3);
        assert_eq!(line["ok"], true);
        assert!(line.get("missing").is_none(), "{line}");
        assert_eq!(
            line["text"],
            "quote\" back\\ nl\n tab\t bell\u{7} кириллица"
        );
        assert_eq!(line["shown"], "disp\"lay");
        assert_eq!(line["debugged"], "Some(\"x\")");
        assert_eq!(line["span"]["request_id"], "r-1");
        assert_eq!(line["span"]["name"], "request");
        let ts = line["timestamp"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "{ts}"
        );
    }

    #[test]
    fn without_a_span_there_is_no_span_key() {
        let got = lines(|| tracing::info!(n = u64::MAX, "plain"));
        assert_eq!(got[0]["message"], "plain");
        assert_eq!(got[0]["n"], u64::MAX);
        assert!(got[0].get("span").is_none());
        let got = lines(|| {
            let span = tracing::info_span!("bare");
            let _entered = span.enter();
            tracing::info!(x = f64::NAN, "in span");
        });
        assert_eq!(got[0]["span"], serde_json::json!({ "name": "bare" }));
        assert_eq!(got[0]["x"], "NaN");
    }
}
