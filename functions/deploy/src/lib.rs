//! The deploy Lambda: an EventBridge "ECR Image Action" push of the api-container image becomes
//! one SSM Run Command of the project's deploy document on the back-end instances, followed to
//! the end on each of them.
//!
//! `main.rs` only wires the runtime: configuration and AWS clients are built once at init, and
//! [`Deployer::handle`] is a plain async function the tests call with their own clients.

pub mod config;
pub mod deploy;
pub mod error;
pub mod event;

pub use config::DeployConfig;
pub use deploy::{DeployOutput, Deployer, InstanceOutcome, InstanceReport};
pub use error::DeployError;

use std::time::Duration;

/// The HTTP client every AWS client uses: rustls on ring (no OpenSSL, no aws-lc, so the aarch64
/// build needs nothing but zig), with the system's root certificates. Plain http works too
/// (moto in the tests).
pub fn http_client() -> aws_sdk_ssm::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The AWS clients, sharing one HTTP client, with the region and credentials from the Lambda's
/// environment, and `AWS_ENDPOINT_URL` honoured (moto, for `cargo lambda watch`).
pub async fn aws_clients() -> (aws_sdk_ecr::Client, aws_sdk_ssm::Client) {
    let http = http_client();
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .build();
    let shared = aws_config::defaults(aws_config::BehaviorVersion::v2026_01_12())
        .http_client(http)
        .timeout_config(timeouts)
        .load()
        .await;
    (
        aws_sdk_ecr::Client::new(&shared),
        aws_sdk_ssm::Client::new(&shared),
    )
}

/// JSON lines for CloudWatch unless a person is watching a terminal; `RUST_LOG` filters.
pub fn init_tracing(format: Option<config::LogFormat>, filter: Option<&str>) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    // DeployConfig has already refused a filter that does not parse.
    let filter =
        EnvFilter::try_new(filter.unwrap_or("info")).unwrap_or_else(|_| EnvFilter::new("info"));
    let format = format.unwrap_or(if std::io::stdout().is_terminal() {
        config::LogFormat::Pretty
    } else {
        config::LogFormat::Json
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        config::LogFormat::Json => builder.json().flatten_event(true).try_init(),
        config::LogFormat::Pretty => builder.try_init(),
    };
}
