//! For operators and verifiers: keys, this document, health, readiness, metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use super::AppState;
use crate::error::{Error, Problem};

/// The public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "keys",
    responses((status = 200, description = "JWKS: every key that signed a still-valid token, and the next key", body = Object,
        content_type = "application/jwk-set+json",
        headers(("Cache-Control" = String, description = "public, max-age=300"))), (status = 503, response = Problem)))]
pub(crate) async fn jwks(State(auth): State<AppState>) -> Result<Response, Error> {
    let jwks = auth.jwks(OffsetDateTime::now_utc()).await?;
    Ok((
        [
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            ),
        ],
        Json(jwks),
    )
        .into_response())
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub(crate) async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}

/// 200 while the process serves.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Serving", body = Object)))]
pub(crate) async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// 200 when the database answers and is migrated, else 503.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Object), (status = 503, response = Problem)))]
pub(crate) async fn readyz(State(auth): State<AppState>) -> Response {
    if auth.ready().await {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        Error::Unavailable("readiness check failed".into()).into_response()
    }
}

/// Prometheus metrics. Expose this port to operators only: the front-end proxies nothing here.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String)))]
pub(crate) async fn metrics(State(auth): State<AppState>) -> Response {
    let status = auth.pool.status();
    let text = auth.metrics.render(&crate::metrics::Snapshot {
        hash_queue_depth: auth.hashing.queue_depth(),
        pool_size: status.size,
        pool_available: status.available,
        pool_waiting: status.waiting,
        pool_max: status.max_size,
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}
