//! The auth Lambda's entry point: configuration, pool, migrations and keys once per copy, at
//! init; then one request at a time through the router.

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;

use auth_lambda::App;
use lambda_http::{Request, service_fn};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match auth_lambda::config_from_env() {
        Ok(config) => config,
        Err(error) => {
            // Before logging is set up on purpose: the init error must reach the log regardless.
            eprintln!("auth-lambda: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    auth_core::init_tracing(config.log_format, config.rust_log.as_deref());
    if config.pbkdf2_iterations < auth_core::config::RECOMMENDED_PBKDF2_ITERATIONS {
        tracing::warn!(
            iterations = config.pbkdf2_iterations,
            "AUTH_PBKDF2_ITERATIONS is below the recommended 600000"
        );
    }
    if config.key_encryption_key.is_none() {
        tracing::warn!("AUTH_KEY_ENCRYPTION_KEY is not set: signing keys are stored unencrypted");
    }
    let app = match App::init(config).await {
        Ok(app) => Arc::new(app),
        Err(error) => {
            tracing::error!(error = %auth_core::error::cause_chain(&error), "auth-lambda could not start");
            return ExitCode::FAILURE;
        }
    };
    let handler = service_fn(move |request: Request| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(app.handle(request).await) }
    });
    match lambda_http::run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "the Lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}
