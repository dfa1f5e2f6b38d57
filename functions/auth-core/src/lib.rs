//! Latchkey's auth core: one library that builds one axum `Router`, served by the api-container
//! binary, the auth Lambda and the tests.

pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod kdf;
pub mod metrics;
pub mod openapi;
pub mod password;
pub mod service;
pub mod store;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::Config;
pub use error::Error;
pub use service::Auth;

/// A built service bound to its port, not yet serving. Binding first lets tests ask for port 0
/// and read the port back.
pub struct Application {
    listener: tokio::net::TcpListener,
    auth: Arc<Auth>,
}

impl Application {
    /// Connects to the database, migrates, prepares keys, then binds `config.listen_addr`.
    pub async fn build(config: Config) -> Result<Self, Error> {
        let listen_addr = config.listen_addr;
        let auth = Arc::new(Auth::init(config).await?);
        let listener = tokio::net::TcpListener::bind(listen_addr)
            .await
            .map_err(|e| Error::internal("binding the listener", e))?;
        Ok(Application { listener, auth })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener
            .local_addr()
            .map_err(|e| Error::internal("reading the bound address", e))
    }

    pub fn auth(&self) -> Arc<Auth> {
        Arc::clone(&self.auth)
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let router = http::router(self.auth);
        axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::internal("serving", e))
    }
}

/// Logs as JSON lines (for containers and log shippers) or pretty text (for people at a
/// terminal); by default JSON unless standard output is a terminal. `RUST_LOG` filters.
pub fn init_tracing(format: Option<config::LogFormat>, filter: Option<&str>) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    // Config::from_env has already refused a filter that does not parse.
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
        config::LogFormat::Pretty => builder.pretty().try_init(),
    };
}
