//! The deploy Lambda: an EventBridge "ECR Image Action" push becomes one SSM Run Command, followed
//! to the end on each instance it reached. The repository decides the route: the api-container
//! image runs the back-end document on the back-end instances, the front-end image (the static
//! site and its nginx settings) the front-end document on the front-end instances.
//!
//! `main.rs` only wires the runtime: configuration and AWS clients are built once at init, and
//! [`Deployer::handle`] is a plain async function the tests call with their own clients.

pub mod config;
pub mod deploy;
pub mod error;
pub mod event;
pub mod outcome;

pub use config::{DeployConfig, Route};
pub use deploy::Deployer;
pub use error::DeployError;
pub use outcome::{DeployOutput, InstanceOutcome, InstanceReport};

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

pub use startup::init_tracing;
