//! The binary: parse the command line, load and validate the settings, set
//! up logging, then run the service or an operator command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use b24_kafka_bridge::settings::{RawSettings, Settings};
use b24_kafka_bridge::startup::Application;
use b24_kafka_bridge::{admin, telemetry};

// glibc malloc/free was ~20% of the CPU profile under load (many small
// allocations per request across worker threads); mimalloc's per-thread
// heaps cut that (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bitrix24 outbound events (webhooks) to Kafka.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML), layered over the built-in defaults;
    /// B24BRIDGE__SECTION__KEY environment variables override both.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge (the default).
    Run,
    /// Validate the configuration, connect to the brokers, check that every
    /// routed topic exists, and print a summary (secrets redacted).
    CheckConfig,
    /// Create the routed topics that do not exist yet.
    CreateTopics {
        #[arg(long, default_value_t = 3)]
        partitions: i32,
    },
    /// Post a realistic form-encoded signing event, as Bitrix24 would.
    SendSample {
        /// Where the bridge listens, e.g. http://127.0.0.1:8080/b24/events.
        #[arg(long)]
        url: String,
        /// member_id to send (default: the first configured portal's).
        #[arg(long)]
        member_id: Option<String>,
        /// application_token to send (default: the first configured portal's).
        #[arg(long)]
        token: Option<String>,
        #[arg(long, default_value = "R-LK-50JI-3AAK-WS1A")]
        document_uid: String,
        #[arg(long, default_value = "signing")]
        status: String,
    },
    /// Print the records of a topic from the beginning.
    Tail {
        #[arg(long, default_value = "b24.sign.document-status")]
        topic: String,
        #[arg(long, default_value_t = 100)]
        max: usize,
        /// Keep waiting for new records.
        #[arg(long)]
        follow: bool,
    },
}

fn load(cli: &Cli) -> Result<Settings, ExitCode> {
    RawSettings::load(cli.config.as_deref())
        .and_then(RawSettings::validate)
        .map_err(|e| {
            eprintln!("b24-kafka-bridge: {e}");
            ExitCode::from(2)
        })
}

fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("b24-kafka-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match load(&cli) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(settings).await,
        Command::CheckConfig => {
            report(admin::check_config(&settings).map(|s| s + "configuration OK\n"))
        }
        Command::CreateTopics { partitions } => {
            report(admin::create_topics(&settings, partitions).await)
        }
        Command::SendSample {
            url,
            member_id,
            token,
            document_uid,
            status,
        } => {
            let portal = &settings.portals[0];
            let member_id = member_id.unwrap_or_else(|| portal.member_id.to_string());
            let token = token.unwrap_or_else(|| portal.token().expose_for_sending().to_owned());
            let ts = time::OffsetDateTime::now_utc().unix_timestamp();
            let body = admin::sample_body(&member_id, &token, &document_uid, &status, ts);
            report(
                admin::send_sample(&url, body)
                    .await
                    .and_then(|(code, body)| {
                        let line = format!("HTTP {code} {body}\n");
                        if (200..300).contains(&code) {
                            Ok(line)
                        } else {
                            Err(line)
                        }
                    }),
            )
        }
        Command::Tail { topic, max, follow } => match admin::tail(&settings, &topic, max, follow) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("b24-kafka-bridge: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn run(settings: Settings) -> ExitCode {
    let _log_guard = telemetry::init(&settings.log);
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
