//! The rdkafka implementation of [`Sink`].

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{Delivery, SendError, Sink};
use crate::event::OutboundRecord;
use crate::settings::KafkaSettings;

pub struct KafkaSink {
    producer: FutureProducer,
}

impl KafkaSink {
    /// The producer configuration: the delivery guarantees are fixed here,
    /// everything else comes from `kafka.properties`.
    pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.brokers)
            .set("client.id", &settings.client_id);
        for (key, value) in &settings.properties {
            config.set(key, value);
        }
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // What Java's default partitioner does for keyed records, so a
            // key lands where a Java or Kafka Streams producer would put it.
            .set("partitioner", "murmur2_random");
        config
    }

    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        let producer = Self::client_config(settings).create()?;
        Ok(KafkaSink { producer })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }
}

/// Errors no retry can fix: the record itself is unacceptable.
fn is_permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::MessageBatchTooLarge
        )
    )
}

fn classify(e: &KafkaError) -> SendError {
    if is_permanent(e) {
        SendError::Rejected(describe(e))
    } else {
        SendError::Kafka(describe(e))
    }
}

fn describe(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => format!("{code:?}"),
        None => e.to_string(),
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn send(
        &self,
        record: &OutboundRecord,
        deadline: Duration,
    ) -> Result<Delivery, SendError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let future_record = FutureRecord::to(&record.topic)
            .key(record.key.as_bytes())
            .payload(record.payload.as_bytes())
            .headers(headers);
        let delivery = match self.producer.send_result(future_record) {
            Ok(delivery) => delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                return Err(SendError::QueueFull)
            }
            Err((e, _)) => return Err(classify(&e)),
        };
        match tokio::time::timeout(deadline, delivery).await {
            Ok(Ok(Ok(d))) => Ok(Delivery {
                partition: d.partition,
                offset: d.offset,
            }),
            Ok(Ok(Err((e, _)))) => Err(classify(&e)),
            Ok(Err(_canceled)) => Err(SendError::Closed),
            Err(_elapsed) => Err(SendError::Timeout(deadline)),
        }
    }

    fn fatal_error(&self) -> Option<String> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code:?}: {reason}"))
    }

    async fn check_ready(&self, timeout: Duration) -> Result<(), String> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|e| describe(&e))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    fn queue_len(&self) -> i64 {
        self.producer.in_flight_count() as i64
    }

    async fn flush(&self, timeout: Duration) -> usize {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            let _ = producer.flush(timeout);
            producer.in_flight_count().max(0) as usize
        })
        .await
        .unwrap_or(usize::MAX)
    }
}
