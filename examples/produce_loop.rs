//! The Kafka path alone, as the benchmark's closed loop sees it: CONNS tasks
//! each produce a record of the bridge's size (key rotating over 5000
//! document uids, 3 partitions, idempotent, acks=all, murmur2_random),
//! wait for the acknowledgement, and produce the next. Prints acks/s over
//! 10 s and librdkafka's own latency windows every 2 s (`int_latency`:
//! produce() to sent, `rtt`: request to response, both µs). Tells how much
//! of a benchmark figure the broker round trip and `linger.ms` allow, with
//! no HTTP in the way. Used for docs/performance.md.
//!
//!     cargo run --release --example produce_loop -- BROKERS [CONNS=64] [LINGER_MS=1] [TOPIC]
//!
//! The topic must exist (`b24-kafka-bridge create-topics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, ProducerContext};
use rdkafka::statistics::Window;
use rdkafka::{ClientContext, Statistics};

struct StatsPrinter;

impl ClientContext for StatsPrinter {
    fn stats(&self, stats: Statistics) {
        let window = |w: &Option<Window>| w.as_ref().map_or((0, 0), |w| (w.avg, w.p99));
        for broker in stats.brokers.values().filter(|b| b.nodeid >= 0) {
            eprintln!(
                "broker {}: int_latency avg/p99 {:?} us, rtt avg/p99 {:?} us, requests sent {}",
                broker.nodeid,
                window(&broker.int_latency),
                window(&broker.rtt),
                broker.tx
            );
        }
    }
}

impl ProducerContext for StatsPrinter {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let brokers = args
        .next()
        .expect("usage: produce_loop BROKERS [CONNS] [LINGER_MS] [TOPIC]");
    let conns: usize = args.next().map_or(64, |c| c.parse().expect("CONNS"));
    let linger = args.next().unwrap_or_else(|| "1".into());
    let topic = args
        .next()
        .unwrap_or_else(|| "b24.sign.document-status".into());
    let producer: FutureProducer<StatsPrinter> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", &linger)
        .set("statistics.interval.ms", "2000")
        .create_with_context(StatsPrinter)
        .expect("producer");
    // A bridge record: ~600 bytes of envelope plus seven CloudEvents headers.
    let payload = "x".repeat(800);
    let acked = Arc::new(AtomicU64::new(0));
    for task in 0..conns {
        let (producer, acked, payload, topic) = (
            producer.clone(),
            acked.clone(),
            payload.clone(),
            topic.clone(),
        );
        tokio::spawn(async move {
            let mut n = task;
            loop {
                let key = format!("R-LK-{:06}-WS1A", n % 5000);
                n += conns;
                let record = FutureRecord::to(&topic).key(&key).payload(&payload);
                if let Err((e, _)) = producer.send(record, Duration::from_secs(5)).await {
                    eprintln!("delivery failed: {e}");
                }
                acked.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (before, started) = (acked.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = acked.load(Ordering::Relaxed);
    println!(
        "{:.0} acks/s with {conns} concurrent produce->ack loops, linger.ms={linger}",
        (after - before) as f64 / started.elapsed().as_secs_f64()
    );
    std::process::exit(0);
}
