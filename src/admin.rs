//! Operator commands: `check-config`, `create-topics`, `send-sample`, `tail`.
//! They print for a person; secrets are shown as `[REDACTED]`.

use std::fmt::Write as _;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::publish::KafkaSink;
use crate::settings::Settings;

const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

fn client_config(settings: &Settings) -> ClientConfig {
    // Same connection settings (TLS, SASL) as the producer.
    let mut config = ClientConfig::new();
    let producer_config = KafkaSink::client_config(&settings.kafka);
    for (k, v) in producer_config.config_map() {
        let producer_only = matches!(
            k,
            "enable.idempotence" | "acks" | "partitioner" | "linger.ms" | "message.timeout.ms"
        );
        if !producer_only {
            config.set(k, v);
        }
    }
    config
}

/// Validates the (already parsed) settings against the cluster: brokers
/// reachable, every routed topic present. Returns the printed summary.
pub fn check_config(settings: &Settings) -> Result<String, String> {
    let mut out = String::new();
    let _ = writeln!(out, "listen            {}", settings.listen);
    let _ = writeln!(out, "kafka.brokers     {}", settings.kafka.brokers);
    for (k, v) in &settings.kafka.properties {
        let shown = if ["password", "secret", "key", "oauthbearer", "jaas", "token"]
            .iter()
            .any(|w| k.contains(w))
        {
            "[REDACTED]"
        } else {
            v.as_str()
        };
        let _ = writeln!(out, "kafka.properties  {k} = {shown}");
    }
    let _ = writeln!(
        out,
        "spool             {} ({}, max {} bytes)",
        settings.spool.dir.display(),
        if settings.spool.enabled {
            "enabled"
        } else {
            "disabled"
        },
        settings.spool.max_bytes
    );
    for p in &settings.portals {
        let _ = writeln!(
            out,
            "portal            member_id={} application_token=[REDACTED]",
            p.member_id
        );
    }
    let consumer: BaseConsumer = client_config(settings)
        .create()
        .map_err(|e| format!("cannot create a Kafka client: {e}"))?;
    let metadata = consumer
        .fetch_metadata(None, METADATA_TIMEOUT)
        .map_err(|e| {
            format!(
                "kafka.brokers {} not reachable: {e}",
                settings.kafka.brokers
            )
        })?;
    let _ = writeln!(
        out,
        "brokers reachable {} broker(s)",
        metadata.brokers().len()
    );
    let mut missing = Vec::new();
    for route in settings.routes.iter() {
        match metadata.topics().iter().find(|t| t.name() == route.topic()) {
            Some(t) if t.error().is_none() => {
                let _ = writeln!(
                    out,
                    "route             {} -> {} ({} partitions) key {}",
                    route.event(),
                    route.topic(),
                    t.partitions().len(),
                    route.key()
                );
            }
            _ => missing.push(route.topic().to_owned()),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "{out}routed topic(s) missing: {} (create them, e.g. with `create-topics`)",
            missing.join(", ")
        ))
    }
}

/// Creates every routed topic that does not exist yet.
pub async fn create_topics(settings: &Settings, partitions: i32) -> Result<String, String> {
    let admin: AdminClient<DefaultClientContext> = client_config(settings)
        .create()
        .map_err(|e| format!("cannot create a Kafka admin client: {e}"))?;
    let mut topics: Vec<&str> = settings.routes.iter().map(|r| r.topic()).collect();
    topics.sort_unstable();
    topics.dedup();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(-1)))
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT)),
        )
        .await
        .map_err(|e| format!("create_topics failed: {e}"))?;
    let mut out = String::new();
    for r in results {
        match r {
            Ok(t) => {
                let _ = writeln!(out, "created {t} ({partitions} partitions)");
            }
            Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => {
                let _ = writeln!(out, "exists  {t}");
            }
            Err((t, e)) => return Err(format!("{out}cannot create {t}: {e:?}")),
        }
    }
    Ok(out)
}

/// A realistic signing-status event, form-encoded exactly as Bitrix24 sends
/// it (percent-encoded brackets, `+` for spaces), including OAuth tokens
/// (made-up values) so that their removal can be checked end to end.
pub fn sample_body(
    member_id: &str,
    token: &str,
    document_uid: &str,
    status: &str,
    ts: i64,
) -> String {
    let access = format!("sample-access-{}", uuid::Uuid::new_v4().simple());
    let refresh = format!("sample-refresh-{}", uuid::Uuid::new_v4().simple());
    let expires = (ts + 3600).to_string();
    let pairs = [
        ("event", "ONSIGNB2EDOCUMENTSTATUSCHANGED"),
        ("event_handler_id", "1213"),
        ("data[documentUid]", document_uid),
        ("data[companyUid]", "C-0001"),
        ("data[statusCode]", status),
        ("data[statusName]", "Signing in progress"),
        ("ts", &ts.to_string()),
        ("auth[access_token]", &access),
        ("auth[expires]", &expires),
        ("auth[expires_in]", "3600"),
        ("auth[scope]", "sign.b2e"),
        ("auth[domain]", "example.bitrix24.com"),
        ("auth[server_endpoint]", "https://oauth.bitrix.info/rest/"),
        ("auth[status]", "L"),
        (
            "auth[client_endpoint]",
            "https://example.bitrix24.com/rest/",
        ),
        ("auth[member_id]", member_id),
        ("auth[user_id]", "1"),
        ("auth[refresh_token]", &refresh),
        ("auth[application_token]", token),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", php_urlencode(k), php_urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// PHP's `urlencode`: what `http_build_query` applies to keys and values.
fn php_urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => out.push(b as char),
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Posts [`sample_body`] to `url`; returns the status line and body.
pub async fn send_sample(url: &str, body: String) -> Result<(u16, String), String> {
    let res = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent("Bitrix24 Webhook Engine")
        .build()
        .map_err(|e| e.to_string())?
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {url} failed: {e}"))?;
    let status = res.status().as_u16();
    let text = res.text().await.map_err(|e| e.to_string())?;
    Ok((status, text))
}

/// Prints the records of `topic` (key, partition, offset, headers, value).
pub fn tail(settings: &Settings, topic: &str, max: usize, follow: bool) -> Result<(), String> {
    let consumer: BaseConsumer = client_config(settings)
        .set(
            "group.id",
            format!("b24-kafka-bridge-tail-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| format!("kafka.brokers not reachable: {e}"))?;
    let partitions = metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len())
        .ok_or_else(|| format!("topic {topic} does not exist"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut seen = 0;
    let mut idle = 0;
    while seen < max {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle = 0;
                seen += 1;
                let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
                let value = m.payload().map(String::from_utf8_lossy).unwrap_or_default();
                let mut headers = Vec::new();
                if let Some(h) = m.headers() {
                    for header in h.iter() {
                        let v = header
                            .value
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default();
                        headers.push(format!("{}={}", header.key, v));
                    }
                }
                println!(
                    "partition={} offset={} key={key}\n  headers: {}\n  value:   {value}",
                    m.partition(),
                    m.offset(),
                    headers.join(" ")
                );
            }
            Some(Err(e)) => return Err(format!("consumer error: {e}")),
            None => {
                idle += 1;
                if !follow && idle >= 6 {
                    break;
                }
            }
        }
    }
    if seen == 0 {
        println!("(no records in {topic})");
    }
    Ok(())
}
