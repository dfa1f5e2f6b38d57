//! The deploy Lambda's entry point: settings and clients once, at init; then one event at a time.

use std::process::ExitCode;
use std::sync::Arc;

use deploy::{DeployConfig, Deployer};
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match DeployConfig::from_env() {
        Ok(config) => config,
        Err(error) => {
            // Before logging is set up on purpose: the init error must reach the log regardless.
            eprintln!("deploy: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    deploy::init_tracing(config.log_format, config.rust_log.as_deref());
    let (ecr, ssm) = deploy::aws_clients().await;
    let deployer = Arc::new(Deployer::new(config, ecr, ssm));
    let handler = service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let deployer = Arc::clone(&deployer);
        async move { deployer.handle(event).await }
    });
    match lambda_runtime::run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "the Lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}
