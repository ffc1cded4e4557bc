//! Getting a record to Kafka without ever losing one that was answered 2xx.
//!
//! The HTTP layer calls [`Publisher::publish`]. Normally the record goes
//! straight to the broker ([`Sink`], implemented on rdkafka by
//! [`KafkaSink`]) and the answer waits for the acknowledgement. When the
//! broker does not acknowledge within the publish deadline, the record is
//! appended to the durable [`Spool`] (fsync'd before the answer) and from
//! then on every new record goes through the spool too, so arrival order is
//! kept, until a drainer task has delivered the spool to Kafka in order.

mod kafka;
pub mod spool;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use kafka::KafkaSink;
pub use spool::{RecoveryReport, Spool, SpoolConfig, SpoolError};

use crate::event::OutboundRecord;
use crate::metrics::Metrics;

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
    /// The broker refused this record for good (too large, invalid): retrying
    /// or spooling it cannot help.
    #[error("Kafka rejected the record: {0}")]
    Rejected(String),
    #[error("the producer is shut down")]
    Closed,
}

impl SendError {
    /// Short label for metrics.
    pub fn code(&self) -> String {
        match self {
            SendError::Timeout(_) => "Timeout".into(),
            SendError::QueueFull => "QueueFull".into(),
            SendError::Kafka(code) | SendError::Rejected(code) => code.clone(),
            SendError::Closed => "Closed".into(),
        }
    }
}

/// A Kafka producer as the bridge needs it.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Hands the record over and waits at most `deadline` for the broker's
    /// acknowledgement. A record that timed out may still be delivered later.
    /// `deadline` may be `Duration::MAX` (the drainer: as long as it takes);
    /// implementations must not add it to an `Instant` unchecked.
    async fn send(
        &self,
        record: &OutboundRecord,
        deadline: Duration,
    ) -> Result<Delivery, SendError>;

    /// Whether the cluster answers a metadata request within `timeout`.
    async fn check_ready(&self, timeout: Duration) -> Result<(), String>;

    /// Delivers what is still queued, waiting at most `timeout`; returns how
    /// many records were left undelivered.
    async fn flush(&self, timeout: Duration) -> usize;

    /// Records handed over and not yet acknowledged or failed.
    fn queue_len(&self) -> i64 {
        0
    }

    /// A fatal producer error (idempotence state lost): nothing will be
    /// delivered until the process restarts.
    fn fatal_error(&self) -> Option<String> {
        None
    }
}

/// What happened to an accepted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged by the broker.
    Delivered(Delivery),
    /// Durable in the local spool; the drainer delivers it later.
    Spooled { seq: u64 },
}

impl Outcome {
    /// The `status` field of the 200 answer.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Delivered(_) => "accepted",
            Outcome::Spooled { .. } => "spooled",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No spool configured and the broker did not acknowledge.
    #[error(transparent)]
    Unavailable(#[from] SendError),
    #[error("the local spool is full")]
    SpoolFull,
    #[error("the local spool cannot store the event: {0}")]
    Spool(String),
}

/// Spool figures for `/readyz` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SpoolStats {
    pub records: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

/// How many spooled records the drainer hands to the producer at once.
const DRAIN_BATCH: usize = 256;
/// The drainer waits for librdkafka's answer for as long as it takes: with
/// `message.timeout.ms` = 0 the batch is delivered once the broker is back,
/// with a finite one the timeout error comes first and a retry from the
/// spool follows. Giving up earlier would only queue copies behind copies.
const DRAIN_DEADLINE: Duration = Duration::MAX;
/// How often a drain batch that is still unacknowledged is logged.
const DRAIN_STALL_WARNING: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

struct Inner {
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    deadline: Duration,
    spool: Option<Arc<Spool>>,
    /// True while the spool may hold anything: new records queue behind it.
    spooling: AtomicBool,
    /// Serialises "decide to spool + append" against "spool drained, leave
    /// spool mode", so no record can overtake a spooled one.
    mode: Mutex<()>,
    stop: watch::Sender<bool>,
}

/// The publish path of a request. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl Publisher {
    pub fn new(
        sink: Arc<dyn Sink>,
        deadline: Duration,
        spool: Option<Arc<Spool>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let spooling = spool.as_ref().is_some_and(|s| s.pending() > 0);
        let (stop, _) = watch::channel(false);
        Publisher {
            inner: Arc::new(Inner {
                sink,
                metrics,
                deadline,
                spool,
                spooling: AtomicBool::new(spooling),
                mode: Mutex::new(()),
                stop,
            }),
        }
    }

    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.inner.sink
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The exposition for `/metrics`.
    pub fn render_metrics(&self) -> String {
        self.inner
            .metrics
            .render(self.spool_stats(), self.inner.sink.queue_len())
    }

    pub fn spool_stats(&self) -> Option<SpoolStats> {
        self.inner.spool.as_ref().map(|s| SpoolStats {
            records: s.pending(),
            bytes: s.used_bytes(),
            max_bytes: s.max_bytes(),
        })
    }

    /// Whether a new event could be spooled right now.
    pub fn spool_can_accept(&self) -> bool {
        self.spool_stats().is_some_and(|s| s.bytes < s.max_bytes)
    }

    pub async fn publish(&self, record: OutboundRecord) -> Result<Outcome, PublishError> {
        let inner = &self.inner;
        let Some(spool) = &inner.spool else {
            return Ok(Outcome::Delivered(
                self.send(&record, inner.deadline, "direct").await?,
            ));
        };
        if inner.spooling.load(Ordering::Acquire) {
            // Queue behind the spool, unless the drainer emptied it and left
            // spool mode meanwhile: decided under the lock it takes to leave.
            let queued = {
                let _mode = lock(&inner.mode);
                inner
                    .spooling
                    .load(Ordering::Acquire)
                    .then(|| spool.append(encode(&record)))
            };
            if let Some(durable) = queued {
                return spooled(durable).await;
            }
        }
        match self.send(&record, inner.deadline, "direct").await {
            Ok(delivery) => Ok(Outcome::Delivered(delivery)),
            Err(e @ SendError::Rejected(_)) => Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "broker did not acknowledge; spooling");
                let durable = {
                    let _mode = lock(&inner.mode);
                    inner.spooling.store(true, Ordering::Release);
                    spool.append(encode(&record))
                };
                spooled(durable).await
            }
        }
    }

    /// `Sink::send` with metrics.
    async fn send(
        &self,
        record: &OutboundRecord,
        deadline: Duration,
        path: &'static str,
    ) -> Result<Delivery, SendError> {
        let started = std::time::Instant::now();
        let result = self.inner.sink.send(record, deadline).await;
        match &result {
            Ok(_) => self.inner.metrics.published(path, started.elapsed()),
            Err(e) => self.inner.metrics.delivery_error(&e.code()),
        }
        result
    }

    /// Starts the task that delivers the spool to Kafka, in order.
    pub fn start_drainer(&self) -> Option<JoinHandle<()>> {
        let spool = self.inner.spool.clone()?;
        let this = self.clone();
        Some(tokio::spawn(async move { this.drain(spool).await }))
    }

    async fn drain(&self, spool: Arc<Spool>) {
        let mut stop = self.inner.stop.subscribe();
        let mut backoff = BACKOFF_MIN;
        loop {
            if *stop.borrow() {
                return;
            }
            let peeked = {
                let spool = spool.clone();
                tokio::task::spawn_blocking(move || spool.peek(DRAIN_BATCH)).await
            };
            let batch = match peeked {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read the spool; retrying");
                    self.sleep_or_stop(&mut stop, BACKOFF_MAX).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "spool read task failed; retrying");
                    self.sleep_or_stop(&mut stop, BACKOFF_MAX).await;
                    continue;
                }
            };
            if batch.is_empty() {
                {
                    let _mode = lock(&self.inner.mode);
                    if spool.pending() == 0 && self.inner.spooling.swap(false, Ordering::AcqRel) {
                        tracing::info!("spool drained; publishing directly again");
                    }
                }
                tokio::select! {
                    _ = spool.wait_for_entries() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            // Don't pile copies into the producer while the broker is away.
            if let Err(reason) = self.inner.sink.check_ready(Duration::from_secs(1)).await {
                tracing::debug!(%reason, "broker unreachable; spool drain waits");
                self.sleep_or_stop(&mut stop, backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            // On shutdown a batch in flight is abandoned: it stays in the
            // spool (the producer flush may still deliver a copy).
            let delivered = tokio::select! {
                result = self.deliver(&spool, batch) => result,
                _ = stop.changed() => return,
            };
            match delivered {
                Ok(()) => backoff = BACKOFF_MIN,
                Err(e) => {
                    tracing::warn!(error = %e, "spool drain failed; will retry");
                    self.sleep_or_stop(&mut stop, backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Hands the batch to the producer in order (its idempotence keeps the
    /// order per partition) and acks the longest delivered prefix.
    async fn deliver(
        &self,
        spool: &Arc<Spool>,
        batch: Vec<spool::SpoolEntry>,
    ) -> Result<(), String> {
        let mut records = Vec::with_capacity(batch.len());
        for entry in &batch {
            match serde_json::from_slice::<OutboundRecord>(&entry.bytes) {
                Ok(r) => records.push((entry.seq, Some(r))),
                Err(e) => {
                    tracing::error!(seq = entry.seq, error = %e, "undecodable spool entry");
                    self.dead_letter(spool, entry.seq, &entry.bytes, "undecodable")?;
                    records.push((entry.seq, None));
                }
            }
        }
        let sends = records.iter().map(|(seq, record)| async move {
            match record {
                Some(r) => (
                    *seq,
                    self.send(r, DRAIN_DEADLINE, "spool").await.map(|_| ()),
                ),
                None => (*seq, Ok(())),
            }
        });
        // No deadline of our own (see DRAIN_DEADLINE), but a stalled drain
        // must not be silent: a broker that answers metadata yet never
        // acknowledges (no leader, not enough replicas) shows up here.
        let all = futures_util::future::join_all(sends);
        tokio::pin!(all);
        let waiting_since = std::time::Instant::now();
        let results = loop {
            match tokio::time::timeout(DRAIN_STALL_WARNING, &mut all).await {
                Ok(results) => break results,
                Err(_) => tracing::warn!(
                    records = batch.len(),
                    waited_secs = waiting_since.elapsed().as_secs(),
                    "spool drain still waiting for the broker's acknowledgement"
                ),
            }
        };
        let mut acked = None;
        let mut failure = None;
        for (seq, result) in results {
            match result {
                Ok(()) => acked = Some(seq),
                Err(SendError::Rejected(code)) => {
                    // Can never be delivered: keep it for the operator, go on.
                    let entry = batch.iter().find(|e| e.seq == seq).expect("seq from batch");
                    tracing::error!(seq, %code, "Kafka rejected a spooled record; dead-lettered");
                    self.dead_letter(spool, seq, &entry.bytes, &code)?;
                    acked = Some(seq);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(seq) = acked {
            let spool = spool.clone();
            tokio::task::spawn_blocking(move || spool.ack(seq))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            tracing::debug!(upto = seq, "spooled records delivered");
        }
        match failure {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        }
    }

    /// Writes an entry that can never be delivered to
    /// `<spool.dir>/dead-letter/<seq>.<reason>` (fsync'd) before it is acked,
    /// so no accepted event disappears without a trace.
    fn dead_letter(
        &self,
        spool: &Spool,
        seq: u64,
        bytes: &[u8],
        reason: &str,
    ) -> Result<(), String> {
        use std::io::Write;
        let dir = spool.dir().join("dead-letter");
        let reason: String = reason
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(48)
            .collect();
        let path = dir.join(format!("{seq:020}.{reason}"));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let mut file = std::fs::File::create(&path)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::File::open(&dir)?.sync_all()
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        self.inner.metrics.delivery_error("DeadLettered");
        Ok(())
    }

    async fn sleep_or_stop(&self, stop: &mut watch::Receiver<bool>, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.changed() => {}
        }
    }

    /// Shutdown: stop the drainer (a batch in flight gets `grace`), flush
    /// the producer within what is left of `grace`, close the spool.
    /// Whatever the broker did not acknowledge stays in the spool.
    pub async fn shutdown(&self, drainer: Option<JoinHandle<()>>, grace: Duration) {
        let started = std::time::Instant::now();
        let _ = self.inner.stop.send(true);
        if let Some(mut handle) = drainer {
            if tokio::time::timeout(grace, &mut handle).await.is_err() {
                tracing::warn!("spool drainer did not stop within the grace period");
                handle.abort();
            }
        }
        // With the spool on, everything the producer still holds is also in
        // the spool (in-flight requests ended accepted or spooled, the
        // drainer acks only what was delivered). If the broker is away,
        // waiting for it only delays the exit: keep those for the next start.
        let mut flush_for = grace.saturating_sub(started.elapsed());
        if self.inner.spool.is_some() && self.inner.sink.queue_len() > 0 {
            let probe = flush_for.min(Duration::from_secs(1));
            if let Err(reason) = self.inner.sink.check_ready(probe).await {
                tracing::warn!(%reason, "broker unreachable at shutdown; not waiting for it");
                flush_for = Duration::ZERO;
            }
        }
        let left = self
            .inner
            .sink
            .flush(flush_for.min(grace.saturating_sub(started.elapsed())))
            .await;
        if let Some(spool) = &self.inner.spool {
            let spool = spool.clone();
            let _ = tokio::task::spawn_blocking(move || spool.close()).await;
        }
        let spooled = self.spool_stats().map_or(0, |s| s.records);
        if left > 0 {
            tracing::warn!(
                undelivered = left,
                spooled,
                "producer still held records at shutdown (each is also in the spool)"
            );
        } else {
            tracing::info!(spooled, "producer flushed");
        }
    }
}

fn encode(record: &OutboundRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("a record always serializes")
}

async fn spooled(
    durable: Result<impl std::future::Future<Output = Result<u64, SpoolError>>, SpoolError>,
) -> Result<Outcome, PublishError> {
    let seq = durable.map_err(spool_error)?.await.map_err(spool_error)?;
    Ok(Outcome::Spooled { seq })
}

fn spool_error(e: SpoolError) -> PublishError {
    match e {
        SpoolError::Full { .. } => PublishError::SpoolFull,
        other => PublishError::Spool(other.to_string()),
    }
}

fn lock(m: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
