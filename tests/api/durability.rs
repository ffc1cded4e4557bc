//! The promise: a 2xx answer means the event is in Kafka or fsync'd in the
//! spool, and the spool reaches Kafka, in order, once the broker is back.
//! These tests stop a real broker (Tansu with SQLite storage, so a restart
//! keeps its data) and kill the real binary.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// First occurrence of every `ce_id`, in partition order: duplicates are
/// allowed (at-least-once), reordering is not.
fn first_occurrences(records: &[Consumed]) -> Vec<&Consumed> {
    let mut seen = HashSet::new();
    records
        .iter()
        .filter(|r| seen.insert(r.headers["ce_id"].clone()))
        .collect()
}

fn assert_per_key_order(records: &[Consumed]) {
    let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for r in first_occurrences(records) {
        by_key
            .entry(r.key.as_str())
            .or_default()
            .push(r.value["data"]["statusCode"].as_str().unwrap());
    }
    for (key, statuses) in by_key {
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(statuses, sorted, "order broken for key {key}");
    }
}

fn ids_in(records: &[Consumed]) -> HashSet<String> {
    records.iter().map(|r| r.headers["ce_id"].clone()).collect()
}

// The outage here lasts longer than librdkafka's old 10 s message timeout. With
// a finite `message.timeout.ms` the idempotent producer drops the timed-out
// record and bumps its epoch locally; Tansu 0.6.0's sqlite storage then
// panics on the first produce with the new epoch (lite.rs:503, "more or less
// than one row") and serves nothing more. The default is now 0 (librdkafka
// never gives a record up), which this test exercises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_mid_stream_loses_nothing_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_sqlite(dir.path());
    let app = TestApp::spawn(&broker.addr.clone(), |raw| {
        raw.kafka.publish_timeout_ms = 1500
    })
    .await;
    let keys = ["R-OUT-A", "R-OUT-B"];
    let mut ids = Vec::new();
    let post = |i: usize| {
        let ev = app.sign_event(keys[i % 2], &format!("s{i:04}"));
        let app = &app;
        async move {
            let started = Instant::now();
            let res = app.post_form(&ev.form()).await;
            assert_eq!(res.status(), 200, "event {i}");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "event {i} too slow"
            );
            let body: Value = res.json().await.unwrap();
            (
                body["status"].as_str().unwrap().to_owned(),
                body["id"].as_str().unwrap().to_owned(),
            )
        }
    };
    // A fresh broker needs a moment (metadata, producer id) before its first
    // acknowledgement fits in the deadline; until then events are spooled.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    loop {
        let (status, id) = post(i).await;
        ids.push(id);
        i += 1;
        if status == "accepted" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broker never acknowledged in time"
        );
    }
    broker.stop();
    let down_since = Instant::now();
    let first_spooled = i;
    for i in first_spooled..first_spooled + 8 {
        let (status, id) = post(i).await;
        assert_eq!(status, "spooled", "event {i} while the broker is down");
        ids.push(id);
    }
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(ready["spool"]["records"].as_u64().unwrap() >= 8, "{ready}");

    // A long outage: records queued in librdkafka outlive any short timeout.
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(down_since.elapsed())).await;
    broker.restart();
    broker.wait_for_topic(&app.doc_topic);
    let records = app.consume_docs(ids.len());
    // Wait for any trailing duplicates, then check the whole topic.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut all = records;
    while !ids.iter().all(|id| ids_in(&all).contains(id)) && Instant::now() < deadline {
        all = app.consume_docs(ids.len() * 3);
    }
    let got = ids_in(&all);
    for (n, id) in ids.iter().enumerate() {
        let phase = if n < first_spooled {
            "before the outage"
        } else {
            "spooled"
        };
        assert!(
            got.contains(id),
            "event #{n} ({phase}, {id}) answered 2xx but not in Kafka; {} of {} there",
            ids.iter().filter(|i| got.contains(*i)).count(),
            ids.len()
        );
    }
    assert_per_key_order(&all);

    // The spool empties and new events go straight to Kafka again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready: Value = app.get("/readyz").await.json().await.unwrap();
        if ready["spool"]["records"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "spool never drained: {ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = post(first_spooled + 8).await;
    assert_eq!(status, "accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_answers_503_stays_up_and_keeps_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_sqlite(dir.path());
    let app = TestApp::spawn(&broker.addr.clone(), |raw| {
        raw.kafka.publish_timeout_ms = 300;
        raw.spool.max_bytes = 8 * 1024;
        raw.spool.segment_bytes = 2 * 1024;
    })
    .await;
    broker.stop();
    let mut spooled = Vec::new();
    let mut full = None;
    for i in 0..40 {
        let res = app
            .post_form(&app.sign_event("R-FULL", &format!("s{i:02}")).form())
            .await;
        if res.status() == 200 {
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["status"], "spooled");
            spooled.push(body["id"].as_str().unwrap().to_owned());
        } else {
            full = Some(res);
            break;
        }
    }
    let res = full.expect("the spool never filled up");
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "spool_full");
    assert!(spooled.len() >= 3, "only {} spooled", spooled.len());
    assert_eq!(app.get("/healthz").await.status(), 200, "process stays up");
    let lines = log_lines_with("spool_full");
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"),
        "an error is logged"
    );

    broker.restart();
    broker.wait_for_topic(&app.doc_topic);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut all = Vec::new();
    while !spooled.iter().all(|id| ids_in(&all).contains(id)) && Instant::now() < deadline {
        all = app.consume_docs(spooled.len() * 2);
    }
    let got = ids_in(&all);
    assert!(
        spooled.iter().all(|id| got.contains(id)),
        "spooled events lost"
    );
    assert_per_key_order(&all);
}

// ------------------------------------------------------- the real binary

/// A broker with SQLite storage, a topic, a portal and a config file for the
/// real binary, all in one temporary directory.
struct Rig {
    dir: tempfile::TempDir,
    broker: Broker,
    topic: String,
    member: String,
    token: String,
    config: std::path::PathBuf,
    port: u16,
    log: std::path::PathBuf,
    client: reqwest::Client,
}

impl Rig {
    async fn new(prefix: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start_sqlite(dir.path());
        let topic = unique(prefix);
        create_topic(&broker.addr, &topic).await;
        let (member, token) = (uuid::Uuid::new_v4().simple().to_string(), unique("tok"));
        let (config, port) = write_config(dir.path(), &broker.addr, &member, &token, &topic);
        let log = dir.path().join("bridge.log");
        Rig {
            dir,
            broker,
            topic,
            member,
            token,
            config,
            port,
            log,
            client: reqwest::Client::new(),
        }
    }

    async fn start_bridge(&self) -> BridgeProcess {
        BridgeProcess::start(&self.config, self.port, &self.log).await
    }

    /// A signing event for the rig's portal.
    fn event(&self, uid: &str, status: &str) -> SignEvent {
        sign_event(&self.member, &self.token, uid, status)
    }
}

/// Reads `topic` until every id in `ids` is there, or 30 s passed.
async fn read_until_all(brokers: &str, topic: &str, ids: &[String]) -> Vec<Consumed> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    let mut all = Vec::new();
    while !ids.iter().all(|id| ids_in(&all).contains(id)) && Instant::now() < deadline {
        let (b, t, n) = (brokers.clone(), topic.clone(), ids.len() * 2);
        all = tokio::task::spawn_blocking(move || consume(&b, &t, n, Duration::from_secs(5)))
            .await
            .unwrap();
    }
    all
}

struct BridgeProcess {
    child: Child,
    base: String,
}

fn write_config(
    dir: &Path,
    brokers: &str,
    member: &str,
    token: &str,
    topic: &str,
) -> (std::path::PathBuf, u16) {
    let port = free_port();
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
workers = 2
shutdown_timeout_secs = 10
[log]
format = "json"
[kafka]
brokers = "{brokers}"
publish_timeout_ms = 700
flush_timeout_secs = 30
[spool]
dir = "{spool}"
[[portals]]
member_id = "{member}"
application_token = "{token}"
[[routes]]
event = "ONSIGNB2EDOCUMENTSTATUSCHANGED"
topic = "{topic}"
key = "data.documentUid"
"#,
        spool = dir.join("spool").display()
    );
    let path = dir.join("bridge.toml");
    std::fs::write(&path, cfg).unwrap();
    (path, port)
}

impl BridgeProcess {
    async fn start(config: &Path, port: u16, log: &Path) -> BridgeProcess {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_b24-kafka-bridge"))
            .arg("--config")
            .arg(config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "bridge did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        BridgeProcess { child, base }
    }

    fn signal(&self, signal: i32) {
        send_signal(self.child.id() as i32, signal);
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post(client: &reqwest::Client, base: &str, ev: &SignEvent) -> Option<(String, String)> {
    let res = client
        .post(format!("{base}/b24/events"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(ev.form())
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    let body: Value = res.json().await.ok()?;
    Some((
        body["status"].as_str()?.to_owned(),
        body["id"].as_str()?.to_owned(),
    ))
}

fn sign_event(member: &str, token: &str, uid: &str, status: &str) -> SignEvent {
    SignEvent {
        event: "ONSIGNB2EDOCUMENTSTATUSCHANGED".into(),
        document_uid: uid.into(),
        status_code: status.into(),
        status_name: "Signing in progress".into(),
        member_id: member.into(),
        application_token: token.into(),
        access_token: unique("access"),
        refresh_token: unique("refresh"),
        ts: "1770374899".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_the_broker_is_down_loses_no_2xx_event() {
    let mut rig = Rig::new("kill").await;

    let bridge = rig.start_bridge().await;
    rig.broker.stop();
    let mut ids = Vec::new();
    for i in 0..6 {
        let ev = rig.event(&format!("R-KILL-{}", i % 3), &format!("s{i:02}"));
        let (status, id) = post(&rig.client, &bridge.base, &ev).await.expect("2xx");
        assert_eq!(status, "spooled");
        ids.push(id);
    }
    bridge.signal(libc::SIGKILL);
    drop(bridge);

    rig.broker.restart();
    let _bridge = rig.start_bridge().await;
    let all = read_until_all(&rig.broker.addr, &rig.topic, &ids).await;
    let got = ids_in(&all);
    for id in &ids {
        assert!(got.contains(id), "2xx'd event {id} lost after SIGKILL");
    }
    assert_per_key_order(&all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_requests_in_flight_exits_0_and_keeps_every_2xx_event() {
    let mut rig = Rig::new("term").await;

    let mut bridge = rig.start_bridge().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let ev = rig.event("R-TERM-A", &format!("a{i:02}"));
        ids.push(post(&rig.client, &bridge.base, &ev).await.expect("2xx").1);
    }
    // A fresh broker may acknowledge the first events too late (they are
    // spooled then, and new ones queue behind them until the spool drains):
    // go on until an event is acknowledged directly, so the requests below
    // reach the producer.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        let ev = rig.event("R-TERM-A", &format!("w{i:02}"));
        let (status, id) = post(&rig.client, &bridge.base, &ev).await.expect("2xx");
        ids.push(id);
        i += 1;
        if status == "accepted" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broker never acknowledged in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // With the broker gone every request waits for the publish deadline:
    // they are in flight when SIGTERM arrives.
    rig.broker.stop();
    let mut inflight = Vec::new();
    for i in 0..10 {
        let ev = rig.event(&format!("R-TERM-{}", i % 2), &format!("b{i:02}"));
        let (client, base) = (rig.client.clone(), bridge.base.clone());
        inflight.push(tokio::spawn(async move { post(&client, &base, &ev).await }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let term_at = Instant::now();
    bridge.signal(libc::SIGTERM);
    for h in inflight {
        if let Some((status, id)) = h.await.unwrap() {
            assert_eq!(status, "spooled");
            ids.push(id);
        }
    }
    assert_eq!(
        ids.len(),
        13 + i,
        "every in-flight request finished with 2xx"
    );
    let status = loop {
        if let Some(status) = bridge.child.try_wait().unwrap() {
            break status;
        }
        // The flush grace is 30 s, but with the broker away everything the
        // producer holds is in the spool: the bridge must not wait for it.
        assert!(
            term_at.elapsed() < Duration::from_secs(20),
            "did not exit promptly with the broker away"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "exit code after SIGTERM");

    rig.broker.restart();
    let _bridge = rig.start_bridge().await;
    let all = read_until_all(&rig.broker.addr, &rig.topic, &ids).await;
    let got = ids_in(&all);
    for id in &ids {
        assert!(got.contains(id), "2xx'd event {id} lost across SIGTERM");
    }
    let logs = std::fs::read_to_string(&rig.log).unwrap();
    assert!(!logs.contains(&rig.token), "token in the bridge's log");
    assert!(
        logs.contains("broker unreachable at shutdown"),
        "the skipped flush is not logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_spool_tail_is_moved_aside_and_intact_records_delivered() {
    let mut rig = Rig::new("torn").await;

    let bridge = rig.start_bridge().await;
    rig.broker.stop();
    let mut ids = Vec::new();
    for i in 0..4 {
        let ev = rig.event("R-TORN", &format!("s{i:02}"));
        ids.push(post(&rig.client, &bridge.base, &ev).await.expect("2xx").1);
    }
    bridge.signal(libc::SIGKILL);
    drop(bridge);
    // Tear the last record: cut the newest segment 10 bytes short.
    let spool = rig.dir.path().join("spool");
    let mut segments: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "seg") && std::fs::metadata(p).unwrap().len() > 0
        })
        .collect();
    segments.sort();
    let last = segments.last().expect("a segment with data");
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    rig.broker.restart();
    let _bridge = rig.start_bridge().await;
    let intact = &ids[..3];
    let all = read_until_all(&rig.broker.addr, &rig.topic, intact).await;
    let got = ids_in(&all);
    assert!(
        intact.iter().all(|id| got.contains(id)),
        "intact records lost"
    );
    assert!(
        !got.contains(&ids[3]),
        "the torn record cannot have been delivered"
    );
    let logs = std::fs::read_to_string(&rig.log).unwrap();
    assert!(
        logs.contains("corrupt spool data moved aside"),
        "corruption is reported"
    );
    assert!(std::fs::read_dir(&spool).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".corrupt-")));
}
