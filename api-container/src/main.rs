//! api-container: the auth core served over HTTP on the back-end host.

use std::process::ExitCode;
use std::time::Duration;

use auth_core::{Application, Config, Error};

/// How long in-flight requests get to finish after SIGTERM before the process exits anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            // Before logging is set up on purpose: this must reach a person even with no logs.
            eprintln!("api-container: invalid configuration: {error}");
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
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %auth_core::error::cause_chain(&error), "api-container stopped");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), Error> {
    let mut delay = Duration::from_millis(250);
    let app = loop {
        match Application::build(config.clone()).await {
            Ok(app) => break app,
            // The database may start after us (or be restarting): wait for it rather than exit
            // in a restart loop.
            Err(Error::Unavailable(cause)) => {
                tracing::warn!(cause = %cause, retry_in_ms = delay.as_millis() as u64, "database unavailable at start-up");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown_signal() => return Ok(()),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(other) => return Err(other),
        }
    };
    tracing::info!(addr = %app.local_addr()?, "listening");
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(());
    }));
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map_err(|e| Error::internal("server task", e))?,
        _ = stopping_rx => tracing::info!("shutting down: draining in-flight requests"),
    }
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(result) => result.map_err(|e| Error::internal("server task", e))?,
        Err(_) => {
            tracing::warn!("drain timed out; exiting with requests still open");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
