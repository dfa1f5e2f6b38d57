//! The HTTP server loop, with the protections `axum::serve` does not offer: a deadline for a
//! request's headers (slow-header clients), a cap on open connections, and a graceful drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::error::Error;

#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// A client must send a request's whole header within this time, or the connection closes.
    pub header_read_timeout: Duration,
    /// Connections beyond this wait in the kernel's backlog until one closes.
    pub max_connections: usize,
    /// After the shutdown signal, how long in-flight requests get to finish before the server
    /// returns anyway.
    pub drain_timeout: Duration,
}

/// How long, after the shutdown signal, open connections keep being served before idle ones are
/// closed. Closing an idle keep-alive connection at once races a client that has just taken it
/// from its pool to send a request: that request fails on the wire though the server never saw
/// it. In this window every answer says `Connection: close`, so busy clients move off their
/// connections cleanly; it ends early once every connection has closed.
const LAST_REQUESTS_WINDOW: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, answers what
/// arrives on open connections for `LAST_REQUESTS_WINDOW` with `Connection: close`, lets every
/// connection finish its in-flight requests (for at most `limits.drain_timeout` in all), and
/// returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let connections = Arc::new(Semaphore::new(max_connections));
    let draining = Arc::new(AtomicBool::new(false));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&connections).acquire_owned() => {
                permit.map_err(|e| Error::internal("connection limit", e))?
            }
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Running out of file descriptors or a reset before accept: wait a moment
                    // rather than spin, and keep serving the connections we have.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let draining_now = Arc::clone(&draining);
        let service = router
            .clone()
            .map_request(move |request: hyper::Request<Incoming>| {
                let mut request = request.map(Body::new);
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                request
            })
            .map_response(move |mut response: axum::response::Response| {
                // HTTP/1 closes after this answer; HTTP/2 drops the header and ends with GOAWAY.
                if draining_now.load(Ordering::Relaxed) {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                response
            });
        let connection = builder.serve_connection_with_upgrades(
            TokioIo::new(stream),
            TowerToHyperService::new(service),
        );
        let watched = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    draining.store(true, Ordering::Relaxed);
    tracing::info!("shutting down: draining in-flight requests");
    let drain = async {
        let window = LAST_REQUESTS_WINDOW.min(limits.drain_timeout);
        // Every permit back means every connection has closed.
        let all_closed =
            connections.acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX));
        let _ = tokio::time::timeout(window, all_closed).await;
        graceful.shutdown().await;
    };
    if tokio::time::timeout(limits.drain_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; exiting with requests still open");
    }
    Ok(())
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM (`docker stop`, systemd).
pub async fn shutdown_signal() {
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
