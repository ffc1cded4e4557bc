//! The main job: a real-shaped Bitrix24 event in, one keyed record out.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn signing_event_becomes_one_keyed_record_with_cloudevents_headers() {
    let app = TestApp::spawn(shared_broker(), |_| {}).await;
    let ev = app.sign_event("R-LK-50JI-3AAK-WS1A", "signing");

    let res = app.post_form(&ev.form()).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "accepted");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);

    let records = app.consume_docs(1);
    assert_eq!(records.len(), 1, "exactly one record");
    let r = &records[0];
    assert_eq!(r.key, "R-LK-50JI-3AAK-WS1A");
    assert_eq!(
        r.partition,
        java_partition("R-LK-50JI-3AAK-WS1A", PARTITIONS)
    );

    assert_eq!(r.headers["ce_specversion"], "1.0");
    assert_eq!(r.headers["ce_id"], id);
    assert_eq!(
        r.headers["ce_source"],
        format!("urn:bitrix24:portal:{}", app.member_id)
    );
    assert_eq!(
        r.headers["ce_type"],
        "bitrix24.ONSIGNB2EDOCUMENTSTATUSCHANGED"
    );
    assert_eq!(r.headers["ce_time"], "2026-02-06T10:48:19Z");
    assert_eq!(r.headers["ce_subject"], "R-LK-50JI-3AAK-WS1A");
    assert_eq!(r.headers["content-type"], "application/json");

    let v = &r.value;
    assert_eq!(v["schemaVersion"], 1);
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["event"], "ONSIGNB2EDOCUMENTSTATUSCHANGED");
    assert_eq!(v["eventHandlerId"], "1213");
    assert_eq!(v["eventTime"], "2026-02-06T10:48:19Z");
    assert!(v["receivedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["portal"]["memberId"], app.member_id.as_str());
    assert_eq!(v["portal"]["domain"], "example.bitrix24.com");
    assert_eq!(
        v["portal"]["clientEndpoint"],
        "https://example.bitrix24.com/rest/"
    );
    assert_eq!(v["key"], "R-LK-50JI-3AAK-WS1A");
    assert_eq!(
        v["data"],
        serde_json::json!({"documentUid": "R-LK-50JI-3AAK-WS1A", "companyUid": "C-0001",
                           "statusCode": "signing", "statusName": "Signing in progress"})
    );
    assert!(v.get("auth").is_none());

    assert_no_secrets(&records, &ev.secrets());
    let lines = log_lines_with(&id);
    assert_eq!(lines.len(), 1, "one log line for the request: {lines:?}");
    let line = &lines[0];
    assert_eq!(line["outcome"], "accepted");
    assert_eq!(line["member_id"], app.member_id.as_str());
    assert_eq!(line["key"], "R-LK-50JI-3AAK-WS1A");
    assert_eq!(line["event"], "ONSIGNB2EDOCUMENTSTATUSCHANGED");
    assert!(line["span"]["request_id"].is_string(), "{line}");
}

#[tokio::test]
async fn keys_spread_over_partitions_as_java_would_place_them() {
    let app = TestApp::spawn(shared_broker(), |_| {}).await;
    let uids: Vec<String> = (0..12).map(|i| format!("R-LK-{i:04}-WS1A")).collect();
    for uid in &uids {
        let res = app.post_form(&app.sign_event(uid, "new").form()).await;
        assert_eq!(res.status(), 200);
    }
    let records = app.consume_docs(uids.len());
    assert_eq!(records.len(), uids.len());
    for r in &records {
        assert_eq!(
            r.partition,
            java_partition(&r.key, PARTITIONS),
            "key {}",
            r.key
        );
    }
    let used: std::collections::HashSet<_> = records.iter().map(|r| r.partition).collect();
    assert!(
        used.len() > 1,
        "12 keys should not all hash to one partition"
    );
}

#[tokio::test]
async fn same_event_as_form_raw_brackets_and_json_has_one_id() {
    let app = TestApp::spawn(shared_broker(), |_| {}).await;
    let ev = app.sign_event("R-SAME-0001", "done");
    let mut ids = Vec::new();
    for res in [
        app.post_form(&ev.form()).await,
        app.post_form(&ev.form_raw_brackets()).await,
        app.post_json(&ev.json()).await,
    ] {
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");

    let mut later = ev.clone();
    later.ts = "1770374900".into();
    let res = app.post_form(&later.form()).await;
    let body: Value = res.json().await.unwrap();
    assert_ne!(
        body["id"],
        ids[0].as_str(),
        "a different ts is a different event"
    );

    let records = app.consume_docs(4);
    assert_eq!(records.len(), 4);
    let ce_ids: Vec<&str> = records
        .iter()
        .map(|r| r.headers["ce_id"].as_str())
        .collect();
    assert_eq!(ce_ids.iter().filter(|i| **i == ids[0]).count(), 3);
    // Same key, same partition: all four are in order on one partition.
    assert!(records.iter().all(|r| r.partition == records[0].partition));
    assert_no_secrets(&records, &ev.secrets());
}

#[tokio::test]
async fn cyrillic_status_names_and_case_insensitive_event_names() {
    let app = TestApp::spawn(shared_broker(), |_| {}).await;
    let mut ev = app.sign_event("R-КИР-1", "signing");
    ev.status_name = "Идёт подписание".into();
    ev.event = "onSignB2eDocumentStatusChanged".into();
    let res = app.post_form(&ev.form()).await;
    assert_eq!(res.status(), 200);
    let records = app.consume_docs(1);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, "R-КИР-1");
    assert_eq!(records[0].value["data"]["statusName"], "Идёт подписание");
    assert_eq!(records[0].value["event"], "ONSIGNB2EDOCUMENTSTATUSCHANGED");
}

#[tokio::test]
async fn member_status_events_go_to_their_own_topic() {
    let app = TestApp::spawn(shared_broker(), |_| {}).await;
    let body = format!(
        "event=ONSIGNB2EMEMBERSTATUSCHANGED&event_handler_id=7\
         &data%5BmemberUid%5D=M-1&data%5BdocumentUid%5D=R-MEM-1&data%5BstatusCode%5D=refused\
         &ts=1770374899&auth%5Bmember_id%5D={}&auth%5Bapplication_token%5D={}",
        app.member_id, app.token
    );
    assert_eq!(app.post_form(&body).await.status(), 200);
    let records = consume(
        &app.brokers,
        &app.member_topic,
        1,
        std::time::Duration::from_secs(15),
    );
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, "R-MEM-1");
    assert_eq!(records[0].value["data"]["memberUid"], "M-1");
    assert_eq!(records[0].value["data"]["statusCode"], "refused");
    assert!(
        app.consume_docs(1).is_empty(),
        "nothing on the document topic"
    );
}

#[tokio::test]
async fn nested_tokens_in_data_are_stripped_and_unknown_fields_pass() {
    let app = TestApp::spawn(shared_broker(), |_| {}).await;
    let ev = app.sign_event("R-NEST-1", "brand-new-status");
    let nested = unique("nested");
    let body = format!(
        "{}&data%5BBOT%5D%5B15010%5D%5Baccess_token%5D={nested}&data%5BUF%5D%5B0%5D=1&data%5BUF%5D%5B1%5D=2&auth%5Bsomething_new%5D=x",
        ev.form()
    );
    assert_eq!(app.post_form(&body).await.status(), 200);
    let records = app.consume_docs(1);
    assert_eq!(records.len(), 1);
    let data = &records[0].value["data"];
    assert_eq!(data["statusCode"], "brand-new-status");
    assert_eq!(data["UF"], serde_json::json!(["1", "2"]));
    assert_eq!(data["BOT"], serde_json::json!({"15010": {}}));
    let mut secrets = ev.secrets().to_vec();
    secrets.push(&nested);
    assert_no_secrets(&records, &secrets);
}

#[tokio::test]
async fn incoming_request_id_is_echoed_and_logged() {
    let app = TestApp::spawn(shared_broker(), |_| {}).await;
    let rid = unique("rid");
    let res = app
        .client
        .post(format!("{}/b24/events", app.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Request-Id", &rid)
        .body(app.sign_event("R-RID-1", "new").form())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], rid.as_str());
    let lines = log_lines_with(&rid);
    assert!(!lines.is_empty());
    assert!(lines
        .iter()
        .all(|l| l["span"]["request_id"] == rid.as_str()));
}
