//! CPU per event of the bridge's own request pipeline, without HTTP and
//! Kafka: form parsing, authentication and normalization (routing, secret
//! stripping, id, envelope, headers) of the benchmark's signing event.
//! Used for docs/performance.md.
//!
//!     cargo run --release --example pipeline_cost [ITERATIONS]

use std::time::Instant;

use b24_kafka_bridge::bitrix24::{parse_form, ApplicationToken, MemberId, Portal, Portals};
use b24_kafka_bridge::event::{normalize, KeyPath, Route, Routes};

// The allocator the binary uses (src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One request body of `../shared/bench/sign-event.lua` (made-up tokens).
const BODY: &str = "event=ONSIGNB2EDOCUMENTSTATUSCHANGED&event_handler_id=1213\
    &data%5BdocumentUid%5D=R-LK-000002-WS1A&data%5BcompanyUid%5D=C-0001\
    &data%5BstatusCode%5D=stopped&data%5BstatusName%5D=Signing+in+progress\
    &ts=1770374899&auth%5Baccess_token%5D=s6p6eclrvim6da22ft9ch94ekreb52lv\
    &auth%5Bexpires%5D=1770378499&auth%5Bexpires_in%5D=3600\
    &auth%5Bscope%5D=sign.b2e&auth%5Bdomain%5D=example.bitrix24.com\
    &auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F\
    &auth%5Bstatus%5D=L\
    &auth%5Bclient_endpoint%5D=https%3A%2F%2Fexample.bitrix24.com%2Frest%2F\
    &auth%5Bmember_id%5D=0123456789abcdef0123456789abcdef&auth%5Buser_id%5D=1\
    &auth%5Brefresh_token%5D=4s386p3q0tr8dy89xvmt96234v3dljg8\
    &auth%5Bapplication_token%5D=apptoken0123456789abcdef01234567";

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("ITERATIONS is a number"))
        .unwrap_or(300_000);
    let portals = Portals::new([Portal::new(
        MemberId::parse("0123456789abcdef0123456789abcdef").expect("member id"),
        ApplicationToken::parse("apptoken0123456789abcdef01234567").expect("token"),
    )]);
    let routes = Routes::new(vec![Route::new(
        "OnSignB2eDocumentStatusChanged",
        "b24.sign.document-status".into(),
        KeyPath::parse("data.documentUid").expect("key path"),
    )]);
    let body = BODY.as_bytes();

    let started = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(parse_form(std::hint::black_box(body)).expect("parses"));
    }
    let parse = started.elapsed() / iterations;

    let started = Instant::now();
    for _ in 0..iterations {
        let tree = parse_form(std::hint::black_box(body)).expect("parses");
        let verified = portals.verify(tree).expect("authenticates");
        let record =
            normalize(verified, &routes, time::OffsetDateTime::now_utc()).expect("normalizes");
        std::hint::black_box(record);
    }
    let all = started.elapsed() / iterations;
    println!(
        "per event, {iterations} iterations: parse {} ns; parse + verify + normalize {} ns",
        parse.as_nanos(),
        all.as_nanos()
    );
}
