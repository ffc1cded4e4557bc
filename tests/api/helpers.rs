//! Test harness: a Tansu broker per test binary (or per test when a test
//! needs to stop it), the application as `main` builds it, a consumer, and
//! a log capture that tests scan for secrets.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use b24_kafka_bridge::settings::{LogFormat, LogSettings, RawPortal, RawRoute, RawSettings};
use b24_kafka_bridge::startup::Application;
use b24_kafka_bridge::telemetry;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub const PARTITIONS: i32 = 3;

// ---------------------------------------------------------------- logs

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stdout().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let settings = LogSettings {
            format: LogFormat::Json,
            level: "info,librdkafka=warn,rdkafka=warn".into(),
        };
        let subscriber = telemetry::subscriber(&settings, || CaptureWriter);
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Everything logged so far by every test in this binary.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// Log lines (JSON) that mention `needle`.
pub fn log_lines_with(needle: &str) -> Vec<serde_json::Value> {
    captured_logs()
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

// ---------------------------------------------------------------- broker

fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return p.into();
    }
    let home_bin = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin/tansu"))
        .filter(|p| p.exists());
    home_bin.unwrap_or_else(|| "tansu".into())
}

/// kill(2); a negative pid is a process group.
pub fn send_signal(pid: i32, signal: i32) {
    assert!(pid != 0 && pid != -1, "refusing to signal pid {pid}");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Tansu broker in its own process group. It dies with the test process:
/// a shell wrapper kills it when its stdin (held by us) closes.
pub struct Broker {
    pub addr: String,
    port: u16,
    storage: String,
    workdir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// In-memory storage: fast, gone on stop.
    pub fn start_memory() -> Broker {
        let dir = tempfile::tempdir().unwrap().keep();
        Self::start(free_port(), "memory://tansu/".into(), dir)
    }

    /// SQLite storage in `workdir`: survives a stop/start.
    pub fn start_sqlite(workdir: &Path) -> Broker {
        Self::start(
            free_port(),
            "sqlite://tansu.db".into(),
            workdir.to_path_buf(),
        )
    }

    fn start(port: u16, storage: String, workdir: PathBuf) -> Broker {
        let mut broker = Broker {
            addr: format!("127.0.0.1:{port}"),
            port,
            storage,
            workdir,
            child: None,
        };
        broker.restart();
        broker
    }

    /// (Re)starts the broker on the same port and storage.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.workdir.join("tansu.log"))
            .unwrap();
        use std::os::unix::process::CommandExt;
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" "$@" & pid=$!; cat >/dev/null; kill -9 $pid 2>/dev/null; wait $pid"#)
            .arg(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            .current_dir(&self.workdir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("cannot start tansu: install it (see README) or set TANSU_BIN");
        self.child = Some(child);
        self.wait_until_up();
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not come up on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the broker serves `topic`'s metadata again (a restarted
    /// Tansu accepts connections before its storage is loaded).
    pub fn wait_for_topic(&self, topic: &str) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(2))
                .ok()
                .and_then(|m| {
                    m.topics()
                        .first()
                        .map(|t| t.error().is_none() && t.partitions().len() == PARTITIONS as usize)
                })
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "broker {} does not serve topic {topic} after its restart",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the broker at once (SIGKILL to its process group).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Not the `kill` binary: procps-ng 4.0.2 turns `kill -KILL -PGID`
            // into kill(-1), which kills every process we may signal.
            send_signal(-(child.id() as i32), libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The broker shared by the tests that do not stop it.
pub fn shared_broker() -> &'static str {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    &BROKER.get_or_init(Broker::start_memory).addr
}

pub async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let new_topic = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&new_topic], &AdminOptions::new())
        .await
        .expect("create_topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e:?}"));
    }
}

// ---------------------------------------------------------------- records

#[derive(Debug, Clone)]
pub struct Consumed {
    pub key: String,
    pub value: serde_json::Value,
    pub raw: String,
    pub headers: HashMap<String, String>,
    pub partition: i32,
    pub offset: i64,
}

/// Reads `topic` from the beginning until `expected` records arrived or
/// `wait` passed; returns them ordered by partition, then offset.
pub fn consume(brokers: &str, topic: &str, expected: usize, wait: Duration) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline && out.len() < expected {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        // Transient client errors (a broker that has just restarted reports
        // AllBrokersDown once) are not failures: the caller checks what
        // arrived.
        let Ok(msg) = msg else {
            continue;
        };
        let raw = String::from_utf8(msg.payload().unwrap_or_default().to_vec()).unwrap();
        let mut headers = HashMap::new();
        if let Some(h) = msg.headers() {
            for header in h.iter() {
                headers.insert(
                    header.key.to_owned(),
                    String::from_utf8(header.value.unwrap_or_default().to_vec()).unwrap(),
                );
            }
        }
        out.push(Consumed {
            key: String::from_utf8(msg.key().unwrap_or_default().to_vec()).unwrap(),
            value: serde_json::from_str(&raw).expect("record value is JSON"),
            raw,
            headers,
            partition: msg.partition(),
            offset: msg.offset(),
        });
    }
    out.sort_by_key(|c| (c.partition, c.offset));
    out
}

/// Kafka's Java `Utils.murmur2`, the hash behind the default partitioner.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() == 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition a Java producer picks for `key`.
pub fn java_partition(key: &str, partitions: i32) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions
}

#[test]
fn murmur2_matches_kafkas_own_test_vectors() {
    // From Kafka's UtilsTest.testMurmur2.
    assert_eq!(murmur2(b"21"), -973932308);
    assert_eq!(murmur2(b"foobar"), -790332482);
    assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
    assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
    assert_eq!(
        murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
        -58897971
    );
    assert_eq!(murmur2(b"abc"), 479470107);
}

// ---------------------------------------------------------------- app

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub brokers: String,
    pub member_id: String,
    pub token: String,
    pub doc_topic: String,
    pub member_topic: String,
}

impl TestApp {
    /// Default settings, unique topics (created), one portal with a fresh
    /// token, then `tweak`; the app is spawned on port 0.
    pub async fn spawn(brokers: &str, tweak: impl FnOnce(&mut RawSettings)) -> TestApp {
        Self::spawn_inner(brokers, true, tweak).await
    }

    /// Like [`TestApp::spawn`] for a broker that cannot create topics (down).
    pub async fn spawn_without_topics(
        brokers: &str,
        tweak: impl FnOnce(&mut RawSettings),
    ) -> TestApp {
        Self::spawn_inner(brokers, false, tweak).await
    }

    async fn spawn_inner(
        brokers: &str,
        create_topics: bool,
        tweak: impl FnOnce(&mut RawSettings),
    ) -> TestApp {
        init_logs();
        let member_id = uuid::Uuid::new_v4().simple().to_string();
        let token = unique("apptoken");
        let doc_topic = unique("doc");
        let member_topic = unique("member");
        if create_topics {
            create_topic(brokers, &doc_topic).await;
            create_topic(brokers, &member_topic).await;
        }

        let mut raw = RawSettings::defaults();
        raw.server.listen = "127.0.0.1:0".into();
        raw.server.workers = 2;
        raw.server.shutdown_timeout_secs = 5;
        raw.kafka.brokers = brokers.to_owned();
        raw.kafka.flush_timeout_secs = 5;
        raw.spool.dir = tempfile::tempdir().unwrap().keep();
        raw.portals = vec![RawPortal::inline(&member_id, &token)];
        raw.routes = vec![
            RawRoute {
                event: "OnSignB2eDocumentStatusChanged".into(),
                topic: doc_topic.clone(),
                key: "data.documentUid".into(),
            },
            RawRoute {
                event: "OnSignB2eMemberStatusChanged".into(),
                topic: member_topic.clone(),
                key: "data.documentUid".into(),
            },
        ];
        tweak(&mut raw);
        let settings = raw.validate().expect("test settings are valid");
        let app = Application::build(settings).await.expect("app builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        TestApp {
            base,
            client: reqwest::Client::new(),
            brokers: brokers.to_owned(),
            member_id,
            token,
            doc_topic,
            member_topic,
        }
    }

    pub async fn post_form(&self, body: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/b24/events", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("User-Agent", "Bitrix24 Webhook Engine")
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }

    pub async fn post_json(&self, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}/b24/events", self.base))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request")
    }

    /// A signing status event for this app's portal, as Bitrix24 puts it on
    /// the wire, with OAuth secrets that must never come out again.
    pub fn sign_event(&self, document_uid: &str, status: &str) -> SignEvent {
        SignEvent {
            event: "ONSIGNB2EDOCUMENTSTATUSCHANGED".into(),
            document_uid: document_uid.into(),
            status_code: status.into(),
            status_name: "Signing in progress".into(),
            member_id: self.member_id.clone(),
            application_token: self.token.clone(),
            access_token: unique("access"),
            refresh_token: unique("refresh"),
            ts: "1770374899".into(),
        }
    }

    pub fn consume_docs(&self, expected: usize) -> Vec<Consumed> {
        consume(
            &self.brokers,
            &self.doc_topic,
            expected,
            Duration::from_secs(15),
        )
    }
}

#[derive(Debug, Clone)]
pub struct SignEvent {
    pub event: String,
    pub document_uid: String,
    pub status_code: String,
    pub status_name: String,
    pub member_id: String,
    pub application_token: String,
    pub access_token: String,
    pub refresh_token: String,
    pub ts: String,
}

fn enc(s: &str) -> String {
    // What PHP's urlencode does: space as '+', everything else outside
    // [A-Za-z0-9_.-] as %XX.
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl SignEvent {
    /// `(key, value)` pairs in Bitrix24's order, keys with raw brackets.
    pub fn pairs(&self) -> Vec<(String, String)> {
        vec![
            ("event".into(), self.event.clone()),
            ("event_handler_id".into(), "1213".into()),
            ("data[documentUid]".into(), self.document_uid.clone()),
            ("data[companyUid]".into(), "C-0001".into()),
            ("data[statusCode]".into(), self.status_code.clone()),
            ("data[statusName]".into(), self.status_name.clone()),
            ("ts".into(), self.ts.clone()),
            ("auth[access_token]".into(), self.access_token.clone()),
            ("auth[expires]".into(), "1770378499".into()),
            ("auth[expires_in]".into(), "3600".into()),
            ("auth[scope]".into(), "sign.b2e".into()),
            ("auth[domain]".into(), "example.bitrix24.com".into()),
            (
                "auth[server_endpoint]".into(),
                "https://oauth.bitrix.info/rest/".into(),
            ),
            ("auth[status]".into(), "L".into()),
            (
                "auth[client_endpoint]".into(),
                "https://example.bitrix24.com/rest/".into(),
            ),
            ("auth[member_id]".into(), self.member_id.clone()),
            ("auth[user_id]".into(), "1".into()),
            ("auth[refresh_token]".into(), self.refresh_token.clone()),
            (
                "auth[application_token]".into(),
                self.application_token.clone(),
            ),
        ]
    }

    /// The body exactly as Bitrix24 sends it: brackets percent-encoded.
    pub fn form(&self) -> String {
        self.pairs()
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The same body with raw brackets in the keys.
    pub fn form_raw_brackets(&self) -> String {
        self.pairs()
            .iter()
            .map(|(k, v)| format!("{}={}", k, enc(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The same tree as JSON (numbers where PHP would have had them).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "event": self.event,
            "event_handler_id": 1213,
            "data": {"documentUid": self.document_uid, "companyUid": "C-0001",
                     "statusCode": self.status_code, "statusName": self.status_name},
            "ts": self.ts.parse::<i64>().unwrap(),
            "auth": {"access_token": self.access_token, "expires": 1770378499, "expires_in": 3600,
                     "scope": "sign.b2e", "domain": "example.bitrix24.com",
                     "server_endpoint": "https://oauth.bitrix.info/rest/", "status": "L",
                     "client_endpoint": "https://example.bitrix24.com/rest/",
                     "member_id": self.member_id, "user_id": 1,
                     "refresh_token": self.refresh_token,
                     "application_token": self.application_token}
        })
    }

    pub fn secrets(&self) -> [&str; 3] {
        [
            &self.access_token,
            &self.refresh_token,
            &self.application_token,
        ]
    }
}

/// Asserts that none of `secrets` appears in the records or in the logs.
pub fn assert_no_secrets(records: &[Consumed], secrets: &[&str]) {
    let logs = captured_logs();
    for secret in secrets {
        for r in records {
            assert!(!r.raw.contains(secret), "secret in record value");
            assert!(!r.key.contains(secret), "secret in record key");
            assert!(
                !r.headers.values().any(|v| v.contains(secret)),
                "secret in record headers"
            );
        }
        assert!(!logs.contains(secret), "secret in logs");
    }
}
