use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn healthz_and_readyz_with_a_live_broker() {
    let app = TestApp::spawn(shared_broker(), |_| {}).await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn metrics_count_requests_events_and_publishes() {
    let app = TestApp::spawn(shared_broker(), |_| {}).await;
    let ev = app.sign_event("R-MET-1", "new");
    assert_eq!(app.post_form(&ev.form()).await.status(), 200);
    let mut bad = ev.clone();
    bad.application_token = "nope".into();
    assert_eq!(app.post_form(&bad.form()).await.status(), 401);

    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = res.text().await.unwrap();
    let member = &app.member_id;
    for needle in [
        r#"b24_bridge_http_requests_total{route="/b24/events",outcome="accepted",status="200"} 1"#.to_owned(),
        r#"b24_bridge_http_requests_total{route="/b24/events",outcome="unauthorized",status="401"} 1"#.to_owned(),
        format!(r#"b24_bridge_events_total{{event="ONSIGNB2EDOCUMENTSTATUSCHANGED",member_id="{member}",outcome="accepted"}} 1"#),
        r#"b24_bridge_publish_duration_seconds_count{path="direct"} 1"#.to_owned(),
        "b24_bridge_spool_records 0".to_owned(),
        "b24_bridge_http_requests_in_flight 1".to_owned(),
        "b24_bridge_kafka_producer_queue_messages 0".to_owned(),
    ] {
        assert!(text.contains(&needle), "missing {needle} in\n{text}");
    }
    assert!(!text.contains(&ev.application_token));
}
