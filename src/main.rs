use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use b24_kafka_bridge::settings::RawSettings;
use b24_kafka_bridge::startup::Application;
use b24_kafka_bridge::telemetry;

/// Bitrix24 outbound events (webhooks) to Kafka.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML), layered over the built-in defaults.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match RawSettings::load(cli.config.as_deref()).and_then(RawSettings::validate) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("b24-kafka-bridge: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log);
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(port = app.port(), "listening");
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}
