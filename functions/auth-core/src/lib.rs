//! Latchkey's auth core: one library that builds one axum `Router`, served by the api-container
//! binary, the auth Lambda and the tests.

pub mod config;
pub mod db;
pub mod error;
pub mod es256;
pub mod hashing;
pub mod http;
/// PBKDF2-HMAC-SHA256, a crate of its own so that it is optimised in test builds too.
pub use kdf;
pub mod mail;
pub mod metrics;
pub mod openapi;
pub mod password;
pub mod seal;
pub mod serve;
pub mod service;
pub mod store;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::Config;
pub use error::Error;
pub use service::Auth;

/// A service bound to its port, not yet serving. Binding first lets tests ask for port 0 and
/// read the port back, and lets the container answer health checks while the database is away.
pub struct Application {
    listener: tokio::net::TcpListener,
    config: Config,
    auth: Option<Arc<Auth>>,
}

/// How long a start-up that cannot reach the database waits between attempts, at most.
const MAX_INIT_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);
/// How long in-flight requests get to finish after the shutdown signal before serving stops
/// anyway.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Application {
    /// Connects to the database, migrates, prepares keys, then binds `config.listen_addr`.
    /// Fails at once when the database cannot be reached.
    pub async fn build(config: Config) -> Result<Self, Error> {
        let auth = Arc::new(Auth::init(config.clone()).await?);
        let mut app = Self::bind(config).await?;
        app.auth = Some(auth);
        Ok(app)
    }

    /// Binds `config.listen_addr` without touching the database: [`Application::run_until`]
    /// then connects in the background, retrying with back-off, and meanwhile answers
    /// `/healthz` 200, `/readyz` 503 and everything else 503 `unavailable`.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind(config.listen_addr)
            .await
            .map_err(|e| Error::internal("binding the listener", e))?;
        Ok(Application {
            listener,
            config,
            auth: None,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener
            .local_addr()
            .map_err(|e| Error::internal("reading the bound address", e))
    }

    /// The service, once [`Application::build`] has prepared it.
    pub fn auth(&self) -> Option<Arc<Auth>> {
        self.auth.clone()
    }

    /// Serves until `shutdown` resolves (in a binary, [`serve::shutdown_signal`]), then stops
    /// accepting and gives in-flight requests up to 30 s to finish.
    /// Returns an error when a start-up in the background meets a fault that retrying cannot
    /// mend (a configuration the database refuses, for instance).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let limits = serve::ServeLimits {
            header_read_timeout: self.config.header_read_timeout,
            max_connections: self.config.max_connections,
            drain_timeout: DRAIN_TIMEOUT,
        };
        let ready: Arc<std::sync::OnceLock<axum::Router>> = Arc::new(std::sync::OnceLock::new());
        let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<Error>();
        match self.auth {
            Some(auth) => {
                let _ = ready.set(http::router(auth));
            }
            None => {
                let ready = Arc::clone(&ready);
                let config = self.config.clone();
                tokio::spawn(async move {
                    match init_with_retry(config).await {
                        Ok(auth) => {
                            tracing::info!("database ready; serving");
                            let _ = ready.set(http::router(Arc::new(auth)));
                        }
                        Err(error) => {
                            let _ = fatal_tx.send(error);
                        }
                    }
                });
            }
        }
        let router = http::starting_router(ready);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = serve::serve(self.listener, router, limits, async move {
            let _ = stop_rx.await;
        });
        tokio::pin!(server);
        tokio::pin!(shutdown);
        tokio::pin!(fatal_rx);
        // The server must keep being polled while we wait, so every branch only decides.
        let mut start_up_settled = false;
        let outcome = loop {
            tokio::select! {
                result = &mut server => return result,
                () = &mut shutdown => break Ok(()),
                fatal = &mut fatal_rx, if !start_up_settled => match fatal {
                    Ok(error) => break Err(error),
                    // The start-up task finished without a fatal error: keep serving.
                    Err(_) => start_up_settled = true,
                },
            }
        };
        let _ = stop_tx.send(());
        server.await?;
        outcome
    }
}

/// Initialises the service, waiting out an unreachable database with capped exponential back-off.
async fn init_with_retry(config: Config) -> Result<Auth, Error> {
    let mut delay = std::time::Duration::from_millis(250);
    loop {
        match Auth::init(config.clone()).await {
            Ok(auth) => return Ok(auth),
            Err(Error::Unavailable(cause)) => {
                tracing::warn!(cause = %cause, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "database unavailable at start-up");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_INIT_BACKOFF);
            }
            Err(other) => return Err(other),
        }
    }
}

/// Sets up logging from `config` and warns about settings that weaken the service. Every binary
/// (the container, the Lambda) starts this way.
pub fn start_logging(config: &Config) {
    init_tracing(config.log_format, config.rust_log.as_deref());
    if config.pbkdf2_iterations < config::RECOMMENDED_PBKDF2_ITERATIONS {
        tracing::warn!(
            iterations = config.pbkdf2_iterations,
            "AUTH_PBKDF2_ITERATIONS is below the recommended 600000"
        );
    }
    if config.smtp.is_none() {
        tracing::warn!(
            "SMTP_URL is unset: mail is written to the log with its links instead of sent (development only)"
        );
    }
    if config.key_encryption_key.is_none() {
        tracing::warn!("AUTH_KEY_ENCRYPTION_KEY is not set: signing keys are stored unencrypted");
    }
}

pub use startup::init_tracing;
