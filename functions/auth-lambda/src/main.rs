//! The auth Lambda's entry point: configuration, pool, migrations and keys once per copy, at
//! init; then one request at a time through the router.

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;

use auth_lambda::App;
use lambda_http::{Request, service_fn};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match auth_lambda::config_from_env()
        .and_then(|config| auth_core::db::check_settings(&config).map(|()| config))
    {
        Ok(config) => config,
        Err(error) => {
            // Before logging is set up on purpose: the init error must reach the log regardless.
            eprintln!("auth-lambda: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    auth_core::start_logging(&config);
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
