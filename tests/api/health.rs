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
