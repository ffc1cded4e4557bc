//! One way to build and run the service, used by `main` and by the tests.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use crate::bitrix24::Portals;
use crate::event::Routes;
use crate::http::{configure, AppState};
use crate::metrics::Metrics;
use crate::publish::{KafkaSink, Publisher, Sink, Spool, SpoolConfig, SpoolError};
use crate::settings::Settings;
use crate::telemetry::request_telemetry;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot start the HTTP server: {0}")]
    Server(#[from] std::io::Error),
    #[error("cannot open the spool (spool.dir): {0}")]
    Spool(#[from] SpoolError),
}

pub struct Application {
    port: u16,
    server: Server,
    publisher: Publisher,
    flush_timeout: Duration,
}

/// Opens the spool and says what recovery found.
fn open_spool(settings: &Settings) -> Result<Option<Arc<Spool>>, SpoolError> {
    if !settings.spool.enabled {
        tracing::warn!("spool disabled: events the broker does not acknowledge in time get 503");
        return Ok(None);
    }
    let (spool, report) = Spool::open(SpoolConfig {
        dir: settings.spool.dir.clone(),
        max_bytes: settings.spool.max_bytes,
        segment_bytes: settings.spool.segment_bytes,
    })?;
    for file in &report.corrupt_files {
        tracing::error!(
            file = %file.display(),
            discarded_bytes = report.discarded_bytes,
            "corrupt spool data moved aside; intact records were recovered"
        );
    }
    if report.records > 0 {
        tracing::info!(
            records = report.records,
            bytes = report.bytes,
            "spool recovered; delivering it before new events"
        );
    }
    Ok(Some(Arc::new(spool)))
}

/// Stops a running [`Application`] gracefully (what SIGTERM does).
#[derive(Clone)]
pub struct ShutdownHandle(ServerHandle);

impl ShutdownHandle {
    pub async fn shutdown(&self) {
        self.0.stop(true).await;
    }
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let sink: Arc<dyn Sink> = Arc::new(KafkaSink::new(&settings.kafka)?);
        Self::build_with_sink(settings, sink).await
    }

    /// Same as [`Application::build`] with another [`Sink`] (tests).
    pub async fn build_with_sink(
        settings: Settings,
        sink: Arc<dyn Sink>,
    ) -> Result<Self, StartupError> {
        let spool = open_spool(&settings)?;
        let metrics = Arc::new(Metrics::new(
            settings.routes.iter().map(|r| r.event().to_owned()),
            settings.portals.iter().map(|p| p.member_id.to_string()),
        ));
        let publisher = Publisher::new(
            sink,
            Duration::from_millis(settings.kafka.publish_timeout_ms),
            spool,
            metrics,
        );
        let state = web::Data::new(AppState {
            portals: Portals::new(settings.portals.clone()),
            routes: Routes::new(settings.routes.clone()),
            publisher: publisher.clone(),
            max_body_bytes: settings.server.max_body_bytes,
            ready_timeout: Duration::from_millis(settings.kafka.ready_timeout_ms),
        });
        let listener = TcpListener::bind(settings.listen).map_err(|source| StartupError::Bind {
            addr: settings.listen,
            source,
        })?;
        let port = listener.local_addr()?.port();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(request_telemetry))
                .configure(configure)
        })
        .listen(listener)?
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        .disable_signals();
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        Ok(Application {
            port,
            server: server.run(),
            publisher,
            flush_timeout: Duration::from_secs(settings.kafka.flush_timeout_secs),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.server.handle())
    }

    /// Serves until SIGTERM/SIGINT (or a [`ShutdownHandle`]), then stops
    /// accepting, lets in-flight requests finish (each ends acknowledged or
    /// spooled), stops the spool drainer and flushes the producer: dropping
    /// an rdkafka producer would purge what it still holds.
    pub async fn run_until_stopped(self) -> Result<(), std::io::Error> {
        let drainer = self.publisher.start_drainer();
        let handle = self.server.handle();
        let signals = tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; draining in-flight requests");
            tokio::spawn(async {
                wait_for_signal().await;
                // Accepted events are in Kafka or the spool: safe to go now.
                tracing::warn!("second signal: exiting without waiting");
                crate::telemetry::flush_logs();
                std::process::exit(130);
            });
            handle.stop(true).await;
        });
        let served = self.server.await;
        signals.abort();
        self.publisher.shutdown(drainer, self.flush_timeout).await;
        served
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
