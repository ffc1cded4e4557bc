//! Everything that must be refused: clear 4xx, stable JSON, nothing in Kafka,
//! no secret in the answer or the logs.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

async fn expect_error(res: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status for {code}");
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    body
}

#[tokio::test]
async fn authentication_failures_are_401_and_publish_nothing() {
    let app = TestApp::spawn(shared_broker(), |_| {}).await;
    let good = app.sign_event("R-AUTH-OK", "new");

    let mut wrong_token = app.sign_event("R-AUTH-1", "new");
    wrong_token.application_token = unique("wrong");
    let mut unknown_member = app.sign_event("R-AUTH-2", "new");
    unknown_member.member_id = "ffffffffffffffffffffffffffffffff".into();
    let missing_token = app
        .sign_event("R-AUTH-3", "new")
        .form()
        .replace(&format!("&auth%5Bapplication_token%5D={}", app.token), "");
    let empty_token = app.sign_event("R-AUTH-4", "new").form().replace(
        &format!("application_token%5D={}", app.token),
        "application_token%5D=",
    );
    let token_in_wrong_place = app
        .sign_event("R-AUTH-5", "new")
        .form()
        .replace("auth%5Bapplication_token%5D", "data%5Bapplication_token%5D");

    let mut bodies = Vec::new();
    for body in [
        wrong_token.form(),
        unknown_member.form(),
        missing_token,
        empty_token,
        token_in_wrong_place,
    ] {
        let b = expect_error(app.post_form(&body).await, 401, "unauthorized").await;
        bodies.push(b.to_string());
    }
    // One answer for every cause: nothing to learn by probing.
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert!(!bodies[0].contains(&wrong_token.application_token));

    assert_eq!(app.post_form(&good.form()).await.status(), 200);
    let records = app.consume_docs(10);
    assert_eq!(records.len(), 1, "only the authenticated event");
    assert_eq!(records[0].key, "R-AUTH-OK");
    let mut secrets = wrong_token.secrets().to_vec();
    secrets.extend(unknown_member.secrets());
    assert_no_secrets(&records, &secrets);
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let app = TestApp::spawn(shared_broker(), |_| {}).await;
    let ev = app.sign_event("R-BAD-1", "new");
    let duplicate = format!("{}&auth%5Bapplication_token%5D=other", ev.form());
    expect_error(app.post_form(&duplicate).await, 400, "malformed_body").await;
    let conflicting = format!("{}&data=flat", ev.form());
    expect_error(app.post_form(&conflicting).await, 400, "malformed_body").await;
    let bad_utf8 = format!("{}&data%5Bx%5D=%FF%FE", ev.form());
    expect_error(app.post_form(&bad_utf8).await, 400, "invalid_encoding").await;
    let bad_ts = ev.form().replace("ts=1770374899", "ts=soon");
    expect_error(app.post_form(&bad_ts).await, 400, "invalid_field").await;
    let res = app
        .client
        .post(format!("{}/b24/events", app.base))
        .header("Content-Type", "application/json")
        .body("{\"event\": ")
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "malformed_body").await;
    let deep = format!("{}&data{}=1", ev.form(), "%5Bx%5D".repeat(40));
    expect_error(app.post_form(&deep).await, 400, "malformed_body").await;
    assert!(app.consume_docs(1).is_empty());
    assert_no_secrets(&[], &ev.secrets());
}

#[tokio::test]
async fn wrong_content_type_is_415_and_oversized_body_is_413() {
    let app = TestApp::spawn(shared_broker(), |raw| raw.server.max_body_bytes = 4096).await;
    let ev = app.sign_event("R-SIZE-1", "new");
    for ct in ["text/plain", "multipart/form-data; boundary=x"] {
        let res = app
            .client
            .post(format!("{}/b24/events", app.base))
            .header("Content-Type", ct)
            .body(ev.form())
            .send()
            .await
            .unwrap();
        expect_error(res, 415, "unsupported_media_type").await;
    }
    let big = format!("{}&data%5Bpad%5D={}", ev.form(), "x".repeat(5000));
    expect_error(app.post_form(&big).await, 413, "payload_too_large").await;
    // Chunked, no Content-Length: the limit holds while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b'a'; 1000])).collect();
    let res = app
        .client
        .post(format!("{}/b24/events", app.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    expect_error(res, 413, "payload_too_large").await;
    assert!(app.consume_docs(1).is_empty());
}

#[tokio::test]
async fn unroutable_events_are_422() {
    let app = TestApp::spawn(shared_broker(), |_| {}).await;
    let mut crm = app.sign_event("R-CRM-1", "new");
    crm.event = "ONCRMDEALUPDATE".into();
    expect_error(app.post_form(&crm.form()).await, 422, "no_route").await;
    let no_event = app
        .sign_event("R-X", "new")
        .form()
        .replace("event=ONSIGNB2EDOCUMENTSTATUSCHANGED&", "");
    expect_error(app.post_form(&no_event).await, 422, "no_route").await;
    let empty_key = app.sign_event("", "new");
    expect_error(app.post_form(&empty_key.form()).await, 422, "missing_key").await;
    let no_key = app
        .sign_event("R-GONE", "new")
        .form()
        .replace("data%5BdocumentUid%5D=R-GONE&", "");
    expect_error(app.post_form(&no_key).await, 422, "missing_key").await;
    assert!(app.consume_docs(1).is_empty());
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let app = TestApp::spawn(shared_broker(), |_| {}).await;
    expect_error(app.get("/nope").await, 404, "not_found").await;
    expect_error(app.get("/b24/events").await, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn without_spool_an_unreachable_broker_is_503_within_the_deadline() {
    // Nothing listens on this port: the broker never acknowledges.
    let dead = format!("127.0.0.1:{}", free_port());
    init_dead_topics_app(&dead).await;
}

async fn init_dead_topics_app(dead: &str) {
    // Topics cannot be created on a dead broker; build the app directly.
    let app = TestApp::spawn_without_topics(dead, |raw| {
        raw.kafka.publish_timeout_ms = 500;
        raw.spool.enabled = false;
    })
    .await;
    let ev = app.sign_event("R-DOWN-1", "new");
    let started = std::time::Instant::now();
    let res = app.post_form(&ev.form()).await;
    let elapsed = started.elapsed();
    let body = expect_error(res, 503, "broker_unavailable").await;
    assert!(elapsed < Duration::from_secs(3), "answered in {elapsed:?}");
    assert!(!body.to_string().contains(&ev.application_token));
    expect_error(app.get("/readyz").await, 503, "not_ready").await;
    assert_no_secrets(&[], &ev.secrets());
}
