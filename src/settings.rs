//! Layered configuration: built-in defaults (`config/default.toml`, compiled
//! in), then an optional file, then `B24BRIDGE__SECTION__KEY` environment
//! variables. Everything is validated once, at start-up, into [`Settings`];
//! an error names the offending key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::bitrix24::{ApplicationToken, MemberId, Portal};
use crate::event::{KeyPath, Route};

/// The defaults, documented key by key in the file itself.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Prefix of environment overrides: `B24BRIDGE__KAFKA__BROKERS=...`.
pub const ENV_PREFIX: &str = "B24BRIDGE";

/// librdkafka properties the bridge owns: its delivery guarantee depends on them.
pub const RESERVED_KAFKA_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "partitioner",
];

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The configuration as written: what `config` deserializes. Turned into
/// [`Settings`] by [`RawSettings::validate`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub kafka: KafkaSettings,
    pub spool: SpoolSettings,
    #[serde(default)]
    pub portals: Vec<RawPortal>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind; port 0 picks a free one.
    pub listen: String,
    /// Largest accepted body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// HTTP workers; 0 = one per core.
    pub workers: usize,
    /// Grace period for in-flight requests on shutdown.
    pub shutdown_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub client_id: String,
    pub publish_timeout_ms: u64,
    pub ready_timeout_ms: u64,
    pub flush_timeout_secs: u64,
    /// Raw librdkafka properties, passed through.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Property values may be SASL passwords: only their names print.
impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("client_id", &self.client_id)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSettings {
    pub enabled: bool,
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPortal {
    pub member_id: Option<String>,
    pub member_id_env: Option<String>,
    pub application_token: Option<SecretString>,
    pub application_token_file: Option<PathBuf>,
    pub application_token_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub event: String,
    pub topic: String,
    pub key: String,
}

/// Validated configuration: only [`RawSettings::validate`] builds it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub listen: SocketAddr,
    pub log: LogSettings,
    pub kafka: KafkaSettings,
    pub spool: SpoolSettings,
    pub portals: Vec<Portal>,
    pub routes: Vec<Route>,
}

impl RawSettings {
    /// Defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            builder = builder.add_source(
                config::File::from(path.to_path_buf())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        Ok(builder.build()?.try_deserialize()?)
    }

    /// The defaults alone, for tests and tools that edit settings as a struct.
    pub fn defaults() -> Self {
        config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("built-in defaults are valid")
    }

    pub fn validate(self) -> Result<Settings, SettingsError> {
        let listen: SocketAddr = self
            .server
            .listen
            .parse()
            .map_err(|e| invalid("server.listen", format!("{e} (expected host:port)")))?;
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be greater than 0"));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must not be empty"));
        }
        if self.kafka.publish_timeout_ms == 0 {
            return Err(invalid(
                "kafka.publish_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.kafka.ready_timeout_ms == 0 {
            return Err(invalid("kafka.ready_timeout_ms", "must be greater than 0"));
        }
        for key in self.kafka.properties.keys() {
            if RESERVED_KAFKA_PROPERTIES.contains(&key.as_str()) {
                return Err(invalid(
                    format!("kafka.properties.{key}"),
                    "is set by the bridge itself and cannot be overridden",
                ));
            }
        }
        if self.spool.max_bytes == 0 {
            return Err(invalid("spool.max_bytes", "must be greater than 0"));
        }
        if self.spool.segment_bytes == 0 {
            return Err(invalid("spool.segment_bytes", "must be greater than 0"));
        }

        if self.portals.is_empty() {
            return Err(invalid(
                "portals",
                "no portal is configured; every event would be rejected (fail closed). \
                 Add a [[portals]] entry with member_id and application_token",
            ));
        }
        let mut portals: Vec<Portal> = Vec::with_capacity(self.portals.len());
        for (i, raw) in self.portals.iter().enumerate() {
            let portal = raw.resolve(i)?;
            if portals.iter().any(|p| p.member_id == portal.member_id) {
                return Err(invalid(
                    format!("portals[{i}].member_id"),
                    "is configured twice",
                ));
            }
            portals.push(portal);
        }

        if self.routes.is_empty() {
            return Err(invalid("routes", "at least one route is required"));
        }
        let mut routes: Vec<Route> = Vec::with_capacity(self.routes.len());
        for (i, raw) in self.routes.iter().enumerate() {
            let event = raw.event.trim();
            if event.is_empty() {
                return Err(invalid(format!("routes[{i}].event"), "must not be empty"));
            }
            validate_topic(&raw.topic).map_err(|r| invalid(format!("routes[{i}].topic"), r))?;
            let key =
                KeyPath::parse(&raw.key).map_err(|r| invalid(format!("routes[{i}].key"), r))?;
            let touches_secret = key.segments().first().is_some_and(|s| s == "auth")
                || key.segments().iter().any(|s| {
                    crate::event::SECRET_KEYS
                        .iter()
                        .any(|k| k.eq_ignore_ascii_case(s))
                });
            if touches_secret {
                return Err(invalid(
                    format!("routes[{i}].key"),
                    "must not point into auth or at a token: the key is published",
                ));
            }
            let route = Route::new(event, raw.topic.clone(), key);
            if routes.iter().any(|r| r.event() == route.event()) {
                return Err(invalid(
                    format!("routes[{i}].event"),
                    format!("{event} is routed twice"),
                ));
            }
            routes.push(route);
        }

        Ok(Settings {
            server: self.server,
            listen,
            log: self.log,
            kafka: self.kafka,
            spool: self.spool,
            portals,
            routes,
        })
    }
}

impl RawPortal {
    /// A portal with an inline token, for tests and examples.
    pub fn inline(member_id: &str, token: &str) -> Self {
        RawPortal {
            member_id: Some(member_id.to_owned()),
            application_token: Some(SecretString::from(token.to_owned())),
            ..Default::default()
        }
    }

    fn resolve(&self, i: usize) -> Result<Portal, SettingsError> {
        let member_id = match (&self.member_id, &self.member_id_env) {
            (Some(m), None) => m.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                invalid(
                    format!("portals[{i}].member_id_env"),
                    format!("environment variable {var} is not set"),
                )
            })?,
            _ => {
                return Err(invalid(
                    format!("portals[{i}].member_id"),
                    "set exactly one of member_id, member_id_env",
                ))
            }
        };
        let member_id = MemberId::parse(member_id.trim())
            .map_err(|r| invalid(format!("portals[{i}].member_id"), r))?;

        let sources = [
            self.application_token.is_some(),
            self.application_token_file.is_some(),
            self.application_token_env.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(invalid(
                format!("portals[{i}].application_token"),
                "set exactly one of application_token, application_token_file, application_token_env",
            ));
        }
        let (key, token) = if let Some(t) = &self.application_token {
            ("application_token", t.expose_secret().to_owned())
        } else if let Some(path) = &self.application_token_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    format!("portals[{i}].application_token_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            ("application_token_file", text)
        } else {
            let var = self.application_token_env.as_deref().unwrap_or_default();
            let value = std::env::var(var).map_err(|_| {
                invalid(
                    format!("portals[{i}].application_token_env"),
                    format!("environment variable {var} is not set"),
                )
            })?;
            ("application_token_env", value)
        };
        let token = ApplicationToken::parse(token.trim())
            .map_err(|r| invalid(format!("portals[{i}].{key}"), r))?;
        Ok(Portal::new(member_id, token))
    }
}

/// Kafka's own rule for topic names.
fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 {
        return Err("must be 1 to 249 characters".into());
    }
    if topic == "." || topic == ".." {
        return Err("cannot be '.' or '..'".into());
    }
    if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "{topic:?} may only contain ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_portal() -> RawSettings {
        let mut raw = RawSettings::defaults();
        raw.portals.push(RawPortal::inline(
            "0123456789abcdef0123456789abcdef",
            "t0k3n",
        ));
        raw
    }

    fn err_key(raw: RawSettings) -> String {
        match raw.validate() {
            Err(SettingsError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid-key error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_route_both_signing_events_by_document_uid() {
        let s = with_portal().validate().unwrap();
        let names: Vec<_> = s.routes.iter().map(|r| r.event().to_owned()).collect();
        assert_eq!(
            names,
            [
                "ONSIGNB2EDOCUMENTSTATUSCHANGED",
                "ONSIGNB2EMEMBERSTATUSCHANGED"
            ]
        );
        assert!(s
            .routes
            .iter()
            .all(|r| r.key().to_string() == "data.documentUid"));
    }

    #[test]
    fn no_portal_is_a_startup_error() {
        assert_eq!(err_key(RawSettings::defaults()), "portals");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut raw = with_portal();
        raw.server.listen = "nope".into();
        assert_eq!(err_key(raw), "server.listen");

        let mut raw = with_portal();
        raw.kafka.properties.insert("acks".into(), "1".into());
        assert_eq!(err_key(raw), "kafka.properties.acks");

        let mut raw = with_portal();
        raw.portals.push(RawPortal {
            member_id: Some("m2".into()),
            ..Default::default()
        });
        assert_eq!(err_key(raw), "portals[1].application_token");

        let mut raw = with_portal();
        raw.routes[0].topic = "bad topic".into();
        assert_eq!(err_key(raw), "routes[0].topic");

        let mut raw = with_portal();
        raw.routes[1].event = "onsignb2edocumentstatuschanged".into();
        assert_eq!(err_key(raw), "routes[1].event");

        for secret_path in ["auth.member_id", "data.BOT.1.access_token"] {
            let mut raw = with_portal();
            raw.routes[0].key = secret_path.into();
            assert_eq!(err_key(raw), "routes[0].key");
        }
    }

    #[test]
    fn token_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file-token\n").unwrap();
        let mut raw = RawSettings::defaults();
        raw.portals.push(RawPortal {
            member_id: Some("m1".into()),
            application_token_file: Some(path),
            ..Default::default()
        });
        std::env::set_var("B24_TEST_TOKEN_ENV_7", "from-env-token");
        raw.portals.push(RawPortal {
            member_id: Some("m2".into()),
            application_token_env: Some("B24_TEST_TOKEN_ENV_7".into()),
            ..Default::default()
        });
        let s = raw.validate().unwrap();
        assert!(s.portals[0].token().matches("from-file-token"));
        assert!(s.portals[1].token().matches("from-env-token"));
        assert!(!format!("{s:?}").contains("from-env-token"));
    }

    #[test]
    fn file_layers_over_defaults_and_unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[kafka]\nbrokers = \"b:1\"\n[[portals]]\nmember_id = \"m\"\napplication_token = \"t\"\n",
        )
        .unwrap();
        let s = RawSettings::load(Some(&path)).unwrap().validate().unwrap();
        assert_eq!(s.kafka.brokers, "b:1");
        assert_eq!(s.kafka.publish_timeout_ms, 2000);
        assert_eq!(s.routes.len(), 2);

        std::fs::write(&path, "[kafka]\nbrokerz = \"b:1\"\n").unwrap();
        let err = RawSettings::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("brokerz"), "{err}");
    }
}
