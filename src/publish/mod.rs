//! Getting a record to Kafka: the [`Sink`] trait (one real implementation,
//! [`KafkaSink`], on rdkafka) and the [`Publisher`] that the HTTP layer
//! calls, which bounds how long a request may wait for the broker.

mod kafka;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use kafka::KafkaSink;

use crate::event::OutboundRecord;

/// Where the broker put a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

/// Why a record was not acknowledged. Messages carry Kafka error names,
/// never record contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the broker did not acknowledge within {0:?}")]
    Timeout(Duration),
    #[error("the producer queue is full")]
    QueueFull,
    #[error("Kafka delivery failed: {0}")]
    Kafka(String),
    #[error("the producer is shut down")]
    Closed,
}

/// A Kafka producer as the bridge needs it.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Hands the record over and waits at most `deadline` for the broker's
    /// acknowledgement. A record that timed out may still be delivered later.
    async fn send(&self, record: &OutboundRecord, deadline: Duration)
        -> Result<Delivery, SendError>;

    /// Whether the cluster answers a metadata request within `timeout`.
    async fn check_ready(&self, timeout: Duration) -> Result<(), String>;

    /// Delivers what is still queued, waiting at most `timeout`; returns how
    /// many records were left undelivered.
    async fn flush(&self, timeout: Duration) -> usize;
}

/// What happened to an accepted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged by the broker.
    Delivered(Delivery),
}

impl Outcome {
    /// The `status` field of the 200 answer.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Delivered(_) => "accepted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Unavailable(#[from] SendError),
}

/// The publish path of a request.
#[derive(Clone)]
pub struct Publisher {
    sink: Arc<dyn Sink>,
    deadline: Duration,
}

impl Publisher {
    pub fn new(sink: Arc<dyn Sink>, deadline: Duration) -> Self {
        Publisher { sink, deadline }
    }

    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.sink
    }

    pub async fn publish(&self, record: OutboundRecord) -> Result<Outcome, PublishError> {
        let delivery = self.sink.send(&record, self.deadline).await?;
        Ok(Outcome::Delivered(delivery))
    }
}
