//! The normalized message: what downstream consumers read from Kafka. A
//! [`VerifiedEvent`] is routed (topic + key) and turned into a versioned JSON
//! envelope with CloudEvents headers; secrets never make it this far.
//! The format is documented in `docs/message-format.md` and
//! `docs/event.schema.json`.

mod route;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub use route::{KeyPath, Route, Routes};

use crate::bitrix24::{EventTree, VerifiedEvent};

/// Version of the envelope; bumped only by breaking changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Keys removed from the tree at any depth before anything leaves the bridge.
pub const SECRET_KEYS: &[&str] = &["access_token", "refresh_token", "application_token"];

/// Why a verified event cannot be published. All are the sender's doing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("the event field is missing")]
    MissingEvent,
    /// (The name is kept for the log; the client message leaves it out.)
    #[error("no route is configured for this event")]
    NoRoute(String),
    #[error("the routing key {0} is missing or empty")]
    MissingKey(String),
    #[error("ts must be Unix seconds")]
    InvalidTs,
    #[error("data must be an object")]
    InvalidData,
}

/// A record ready for Kafka. It is also what the spool stores, hence serde.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundRecord {
    pub topic: String,
    pub key: String,
    /// The JSON envelope.
    pub payload: String,
    pub headers: Vec<(String, String)>,
    /// The envelope id (also `ce_id`).
    pub id: String,
    /// Upper-cased event name (for logs and metrics).
    pub event: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    schema_version: u32,
    id: &'a str,
    event: &'a str,
    event_handler_id: Option<&'a str>,
    event_time: Option<&'a str>,
    received_at: &'a str,
    portal: PortalInfo<'a>,
    user_id: Option<&'a str>,
    key: &'a str,
    data: &'a Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PortalInfo<'a> {
    member_id: &'a str,
    domain: Option<&'a str>,
    client_endpoint: Option<&'a str>,
}

/// Routes, strips secrets and builds the envelope and headers. Takes the
/// event by value: secrets are removed from the tree in place rather than
/// from a copy.
pub fn normalize(
    event: VerifiedEvent,
    routes: &Routes,
    received_at: OffsetDateTime,
) -> Result<OutboundRecord, NormalizeError> {
    let (tree, member_id) = event.into_parts();
    let name = tree
        .str_field("event")
        .ok_or(NormalizeError::MissingEvent)?;
    let route = routes
        .find(name)
        .ok_or_else(|| NormalizeError::NoRoute(name.to_owned()))?;
    let event_time = match tree.str_field("ts") {
        None => None,
        Some(ts) => Some(unix_to_rfc3339(ts).ok_or(NormalizeError::InvalidTs)?),
    };
    let received_at = received_at
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into());

    let mut root = tree.into_root();
    remove_secrets(&mut root);
    let tree = EventTree::from_sanitized(root);
    let key = match tree.lookup(route.key().segments()) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.as_str(),
        _ => return Err(NormalizeError::MissingKey(route.key().to_string())),
    };
    let empty = Value::Object(Map::new());
    let data = match tree.root().get("data") {
        None => &empty,
        Some(d @ Value::Object(_)) => d,
        Some(_) => return Err(NormalizeError::InvalidData),
    };
    let id = event_id(tree.root());
    let upper = route.event();

    let envelope = Envelope {
        schema_version: SCHEMA_VERSION,
        id: &id,
        event: upper,
        event_handler_id: tree.str_field("event_handler_id"),
        event_time: event_time.as_deref(),
        received_at: &received_at,
        portal: PortalInfo {
            member_id: member_id.as_str(),
            domain: tree.auth_field("domain"),
            client_endpoint: tree.auth_field("client_endpoint"),
        },
        user_id: tree.auth_field("user_id"),
        key,
        data,
    };
    let payload = serde_json::to_string(&envelope).expect("an envelope always serializes");

    let headers = vec![
        ("ce_specversion".to_owned(), "1.0".to_owned()),
        ("ce_id".to_owned(), id.clone()),
        (
            "ce_source".to_owned(),
            format!("urn:bitrix24:portal:{member_id}"),
        ),
        ("ce_type".to_owned(), format!("bitrix24.{upper}")),
        (
            "ce_time".to_owned(),
            event_time.unwrap_or_else(|| received_at.clone()),
        ),
        ("ce_subject".to_owned(), key.to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    Ok(OutboundRecord {
        topic: route.topic().to_owned(),
        key: key.to_owned(),
        payload,
        headers,
        id,
        event: upper.to_owned(),
    })
}

fn unix_to_rfc3339(ts: &str) -> Option<String> {
    let secs: i64 = ts.trim().parse().ok()?;
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

fn is_secret(key: &str) -> bool {
    SECRET_KEYS.iter().any(|s| s.eq_ignore_ascii_case(key))
}

/// Removes every secret key from `map`, at any depth.
fn remove_secrets(map: &mut Map<String, Value>) {
    map.retain(|k, _| !is_secret(k));
    for value in map.values_mut() {
        remove_secrets_value(value);
    }
}

fn remove_secrets_value(value: &mut Value) {
    match value {
        Value::Object(map) => remove_secrets(map),
        Value::Array(items) => items.iter_mut().for_each(remove_secrets_value),
        _ => {}
    }
}

/// Feeds serialized bytes straight into the hash: no intermediate buffer.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Deterministic id: SHA-256 of the canonical tree (keys sorted, string
/// leaves, secrets removed), first 16 bytes in hex. A re-sent event gets the
/// same id whether it came as a form or as JSON; any difference changes it.
/// Secrets are left out so that the id never depends on (or hints at) them.
fn event_id(sanitized: &Map<String, Value>) -> String {
    let mut hasher = Sha256::new();
    {
        // serde_json writes many tiny slices; hash them in blocks.
        let mut writer = std::io::BufWriter::with_capacity(1024, HashWriter(&mut hasher));
        serde_json::to_writer(&mut writer, sanitized).expect("a tree always serializes");
        std::io::Write::flush(&mut writer).expect("hashing cannot fail");
    }
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitrix24::{parse_form, parse_json, ApplicationToken, MemberId, Portal, Portals};
    use serde_json::json;
    use time::macros::datetime;

    const MEMBER: &str = "0123456789abcdef0123456789abcdef";
    const BODY: &str = "event=ONSIGNB2EDOCUMENTSTATUSCHANGED&event_handler_id=1213\
        &data%5BdocumentUid%5D=R-LK-50JI-3AAK-WS1A&data%5BcompanyUid%5D=C-0001\
        &data%5BstatusCode%5D=signing&data%5BstatusName%5D=Signing+in+progress\
        &data%5BBOT%5D%5B15010%5D%5Baccess_token%5D=nested-secret\
        &ts=1770374899&auth%5Baccess_token%5D=acc-secret&auth%5Brefresh_token%5D=ref-secret\
        &auth%5Bdomain%5D=example.bitrix24.com\
        &auth%5Bclient_endpoint%5D=https%3A%2F%2Fexample.bitrix24.com%2Frest%2F\
        &auth%5Bmember_id%5D=0123456789abcdef0123456789abcdef&auth%5Buser_id%5D=1\
        &auth%5Bapplication_token%5D=app-secret";

    fn verified(body: &str) -> VerifiedEvent {
        let portals = Portals::new([Portal::new(
            MemberId::parse(MEMBER).unwrap(),
            ApplicationToken::parse("app-secret").unwrap(),
        )]);
        portals
            .verify(parse_form(body.as_bytes()).unwrap())
            .unwrap()
    }

    fn routes() -> Routes {
        Routes::new(vec![Route::new(
            "OnSignB2eDocumentStatusChanged",
            "docs".into(),
            KeyPath::parse("data.documentUid").unwrap(),
        )])
    }

    fn record(body: &str) -> OutboundRecord {
        normalize(
            verified(body),
            &routes(),
            datetime!(2026-12-03 16:40:00.5 UTC),
        )
        .unwrap()
    }

    #[test]
    fn envelope_fields() {
        let r = record(BODY);
        assert_eq!(r.topic, "docs");
        assert_eq!(r.key, "R-LK-50JI-3AAK-WS1A");
        let v: Value = serde_json::from_str(&r.payload).unwrap();
        assert_eq!(v["schemaVersion"], 1);
        assert_eq!(v["id"], r.id.as_str());
        assert_eq!(v["event"], "ONSIGNB2EDOCUMENTSTATUSCHANGED");
        assert_eq!(v["eventHandlerId"], "1213");
        assert_eq!(v["eventTime"], "2026-02-06T10:48:19Z");
        assert_eq!(v["receivedAt"], "2026-12-03T16:40:00.5Z");
        assert_eq!(
            v["portal"],
            json!({"memberId": MEMBER, "domain": "example.bitrix24.com",
                   "clientEndpoint": "https://example.bitrix24.com/rest/"})
        );
        assert_eq!(v["userId"], "1");
        assert_eq!(v["key"], "R-LK-50JI-3AAK-WS1A");
        assert_eq!(
            v["data"],
            json!({"documentUid": "R-LK-50JI-3AAK-WS1A", "companyUid": "C-0001",
                   "statusCode": "signing", "statusName": "Signing in progress",
                   "BOT": {"15010": {}}})
        );
    }

    #[test]
    fn cloudevents_headers() {
        let r = record(BODY);
        let h: std::collections::HashMap<_, _> = r.headers.iter().cloned().collect();
        assert_eq!(h["ce_specversion"], "1.0");
        assert_eq!(h["ce_id"], r.id);
        assert_eq!(h["ce_source"], format!("urn:bitrix24:portal:{MEMBER}"));
        assert_eq!(h["ce_type"], "bitrix24.ONSIGNB2EDOCUMENTSTATUSCHANGED");
        assert_eq!(h["ce_time"], "2026-02-06T10:48:19Z");
        assert_eq!(h["ce_subject"], "R-LK-50JI-3AAK-WS1A");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(r.id.len(), 32);
    }

    #[test]
    fn no_secret_leaves_the_bridge() {
        let r = record(BODY);
        let all = format!("{r:?}");
        for secret in ["acc-secret", "ref-secret", "app-secret", "nested-secret"] {
            assert!(!all.contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn id_is_stable_across_encodings_and_changes_with_content() {
        let a = record(BODY);
        let b = record(BODY);
        assert_eq!(a.id, b.id);
        let tree = parse_form(BODY.as_bytes()).unwrap();
        let as_json = serde_json::to_vec(&Value::Object(tree.root().clone())).unwrap();
        let portals = Portals::new([Portal::new(
            MemberId::parse(MEMBER).unwrap(),
            ApplicationToken::parse("app-secret").unwrap(),
        )]);
        let from_json = portals.verify(parse_json(&as_json).unwrap()).unwrap();
        let c = normalize(from_json, &routes(), OffsetDateTime::now_utc()).unwrap();
        assert_eq!(a.id, c.id, "same event as JSON, later: same id");
        let d = record(&BODY.replace("ts=1770374899", "ts=1770374900"));
        assert_ne!(a.id, d.id);
        let e = record(&BODY.replace("statusCode%5D=signing", "statusCode%5D=done"));
        assert_ne!(a.id, e.id);
        let f = record(&BODY.replace("acc-secret", "other-access"));
        assert_eq!(a.id, f.id, "secrets are not part of the id");
    }

    #[test]
    fn routing_errors() {
        let r = routes();
        let now = OffsetDateTime::now_utc();
        let ev = verified(&BODY.replace("ONSIGNB2EDOCUMENTSTATUSCHANGED", "ONCRMDEALUPDATE"));
        assert_eq!(
            normalize(ev.clone(), &r, now).unwrap_err(),
            NormalizeError::NoRoute("ONCRMDEALUPDATE".into())
        );
        let ev = verified(&BODY.replace(
            "data%5BdocumentUid%5D=R-LK-50JI-3AAK-WS1A",
            "data%5BdocumentUid%5D=",
        ));
        assert_eq!(
            normalize(ev.clone(), &r, now).unwrap_err(),
            NormalizeError::MissingKey("data.documentUid".into())
        );
        let ev = verified(&BODY.replace("ts=1770374899", "ts=yesterday"));
        assert_eq!(
            normalize(ev.clone(), &r, now).unwrap_err(),
            NormalizeError::InvalidTs
        );
        let ev = verified(&BODY.replace("event=ONSIGNB2EDOCUMENTSTATUSCHANGED&", ""));
        assert_eq!(
            normalize(ev.clone(), &r, now).unwrap_err(),
            NormalizeError::MissingEvent
        );
    }

    #[test]
    fn missing_ts_falls_back_to_received_time_in_ce_time() {
        let r = record(&BODY.replace("&ts=1770374899", ""));
        let v: Value = serde_json::from_str(&r.payload).unwrap();
        assert_eq!(v["eventTime"], Value::Null);
        assert!(r
            .headers
            .contains(&("ce_time".into(), "2026-12-03T16:40:00.5Z".into())));
    }
}
