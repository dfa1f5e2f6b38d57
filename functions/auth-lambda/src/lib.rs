//! The auth core's router under `lambda_http`: the same contract as the container, behind an
//! HTTP API or a Lambda Function URL (both send the API Gateway v2 payload).
//!
//! Per copy, once, at init: the configuration, the database pool (two connections at most: a
//! copy serves one request at a time, and every copy's connections count against the database's
//! or RDS Proxy's limit), migrations and keys. Per event: nothing but the request.
//!
//! `main.rs` only wires the runtime; [`App::handle`] is a plain async function that the tests
//! call with events from `events/`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use auth_core::{Auth, Config, Error};
use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::Response;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use tokio::sync::OnceCell;
use tower::ServiceExt;

/// Connections per copy when `DB_POOL_SIZE` is not set.
pub const DEFAULT_POOL_SIZE: usize = 2;
/// More would sit idle in a copy that serves one request at a time, while counting against the
/// database's connection limit times the number of copies.
pub const MAX_POOL_SIZE: usize = 2;

/// The auth core's configuration, with the Lambda's own default and limit for the pool.
pub fn config_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
    let config = Config::from_lookup(|name| {
        let value = lookup(name);
        if name == "DB_POOL_SIZE" && value.as_deref().is_none_or(|v| v.trim().is_empty()) {
            return Some(DEFAULT_POOL_SIZE.to_string());
        }
        value
    })?;
    if config.db_pool_size > MAX_POOL_SIZE {
        return Err(Error::Config {
            variable: "DB_POOL_SIZE",
            message: format!(
                "expected 1 to {MAX_POOL_SIZE}: a Lambda copy serves one request at a time, and every copy's connections count against the database's limit"
            ),
        });
    }
    Ok(config)
}

pub fn config_from_env() -> Result<Config, Error> {
    config_from_lookup(|name| std::env::var(name).ok())
}

/// One Lambda copy's service.
pub struct App {
    config: Config,
    /// Built at init; only when the database could not be reached then is it built by the first
    /// request that finds it (and until then requests get the contract's 503 `unavailable`).
    router: OnceCell<Router>,
}

impl App {
    /// Connects, migrates and loads the keys. A database that cannot be reached (yet) is not
    /// fatal: a copy that exits at init makes API Gateway answer a bare 500, where the contract
    /// says 503 `unavailable`. Anything else (bad credentials, a broken schema) is.
    pub async fn init(config: Config) -> Result<Self, Error> {
        let app = App {
            config,
            router: OnceCell::new(),
        };
        match build_router(app.config.clone()).await {
            Ok(router) => {
                let _ = app.router.set(router);
            }
            Err(Error::Unavailable(cause)) => {
                tracing::warn!(cause = %cause, "database unavailable at init: requests answer 503 until it is reachable");
            }
            Err(other) => return Err(other),
        }
        Ok(app)
    }

    /// Whether the database was reached and the router built.
    pub fn is_ready(&self) -> bool {
        self.router.initialized()
    }

    /// One event: the request as API Gateway or the Function URL sent it, the response as the
    /// container would send it (lambda_http turns it into the v2 payload, cookies included).
    pub async fn handle(&self, request: Request) -> Response {
        let request = into_axum_request(request);
        let router = self
            .router
            .get_or_try_init(|| build_router(self.config.clone()))
            .await;
        match router {
            Ok(router) => match router.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
            Err(error) => not_ready(&request, &error),
        }
    }
}

async fn build_router(config: Config) -> Result<Router, Error> {
    let auth = Auth::init(config).await?;
    Ok(auth_core::http::router(Arc::new(auth)))
}

/// The client's address for the per-IP limits and the session list: the address API Gateway
/// saw (`requestContext.http.sourceIp`), given to the router as the connection's peer, which is
/// what the container's listener gives it.
pub fn source_ip(request: &Request) -> Option<IpAddr> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.http.source_ip.as_deref()?.parse().ok(),
        _ => None,
    }
}

pub fn into_axum_request(request: Request) -> axum::extract::Request {
    let peer = source_ip(&request);
    let (mut parts, body) = request.into_parts();
    if let Some(ip) = peer {
        parts.extensions.insert(ConnectInfo(SocketAddr::new(ip, 0)));
    }
    // lambda_http has already decoded a base64 body; its Body is an http_body::Body, so the
    // router reads it as it is.
    axum::extract::Request::from_parts(parts, axum::body::Body::new(body))
}

/// The answer while the service cannot be built: the core's, as the container gives it while
/// it starts; the cause goes to the log only.
fn not_ready(request: &axum::extract::Request, error: &Error) -> Response {
    tracing::error!(error = %auth_core::error::cause_chain(error), "the service could not start");
    auth_core::http::not_ready(request, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config_with(pairs: &[(&str, &str)]) -> Result<Config, Error> {
        let mut map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.entry("DATABASE_URL".into())
            .or_insert_with(|| "postgres://u:p@127.0.0.1:1/db?sslmode=disable".into());
        config_from_lookup(move |name| map.get(name).cloned())
    }

    #[test]
    fn a_copy_holds_two_connections_unless_told_one() {
        assert_eq!(config_with(&[]).unwrap().db_pool_size, 2);
        assert_eq!(
            config_with(&[("DB_POOL_SIZE", "")]).unwrap().db_pool_size,
            2
        );
        assert_eq!(
            config_with(&[("DB_POOL_SIZE", "1")]).unwrap().db_pool_size,
            1
        );
    }

    #[test]
    fn a_larger_pool_is_refused_by_name() {
        match config_with(&[("DB_POOL_SIZE", "16")]) {
            Err(Error::Config { variable, message }) => {
                assert_eq!(variable, "DB_POOL_SIZE");
                assert!(message.contains("one request at a time"), "{message}");
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn the_core_still_validates_everything_else() {
        assert!(matches!(
            config_with(&[("AUTH_SIGNING_ALG", "HS256")]),
            Err(Error::Config {
                variable: "AUTH_SIGNING_ALG",
                ..
            })
        ));
    }
}
