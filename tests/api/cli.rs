//! The operator commands, run as the real binary.

use std::path::Path;
use std::process::{Command, Output};

use crate::helpers::*;

fn bridge(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_b24-kafka-bridge"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn config_file(dir: &Path, brokers: &str, topic: &str, token: &str) -> std::path::PathBuf {
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\n[[portals]]\nmember_id = \"m1\"\napplication_token = \"{token}\"\n\
             [[routes]]\nevent = \"ONSIGNB2EDOCUMENTSTATUSCHANGED\"\ntopic = \"{topic}\"\nkey = \"data.documentUid\"\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connects_checks_topics_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = shared_broker();
    let token = unique("cfgtoken");
    let topic = unique("cfg");

    let config = config_file(dir.path(), brokers, &topic, &token);
    let out = bridge(&["check-config"], &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "missing topic must fail");
    assert!(stderr.contains(&topic), "{stderr}");
    assert!(!stderr.contains(&token));

    create_topic(brokers, &topic).await;
    let out = bridge(&["check-config"], &config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration OK"));
    assert!(
        stdout.contains(&format!("{topic} (3 partitions)")),
        "{stdout}"
    );
    assert!(stdout.contains("application_token=[REDACTED]"));
    assert!(!stdout.contains(&token));

    std::fs::write(&config, "[kafka]\nbrokers = \"x:1\"\n").unwrap();
    let out = bridge(&["check-config"], &config);
    assert_eq!(out.status.code(), Some(2), "no portal: configuration error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("portals"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_sample_posts_what_bitrix24_would_and_the_record_arrives() {
    let app = TestApp::spawn(shared_broker(), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &app.brokers, &app.doc_topic, "unused");
    let url = format!("{}/b24/events", app.base);
    let out = bridge(
        &[
            "send-sample",
            "--url",
            &url,
            "--member-id",
            &app.member_id,
            "--token",
            &app.token,
            "--document-uid",
            "R-SAMPLE-1",
        ],
        &config,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("HTTP 200"), "{stdout}");
    let records = app.consume_docs(1);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, "R-SAMPLE-1");
    assert_eq!(records[0].value["data"]["statusCode"], "signing");
    // The sample carries OAuth tokens like a real event; none come out.
    assert!(
        !records[0].raw.contains("sample-access") && !records[0].raw.contains("sample-refresh")
    );

    let out = bridge(&["send-sample", "--url", &url, "--token", "wrong"], &config);
    assert!(!out.status.success(), "a 401 is a failure");
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"));

    let out = bridge(&["tail", "--topic", &app.doc_topic, "--max", "1"], &config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("key=R-SAMPLE-1") && stdout.contains("ce_id="),
        "{stdout}"
    );
}
