//! The layers every request passes: request ids, the size check, the request deadline, CORS,
//! and the one log line and metrics per request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::RequestId;

use super::extract::is_plain_request_id;
use super::{AppState, MAX_BODY_BYTES, X_REQUEST_ID};
use crate::error::{Error, ErrorCause};
use crate::metrics::{RequestLabels, RouteLabels};

/// Bounds the whole request: past the limit it is abandoned (an open transaction rolls back) and
/// the client gets 503 `timeout`, instead of holding a connection and a worker indefinitely.
pub(super) async fn limit_request_time(
    State(auth): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(auth.config.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::Timeout.into_response(),
    }
}

/// CORS only for the configured origins, with credentials; none configured means no CORS
/// headers at all, so browsers keep other sites out.
pub(super) fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static(X_REQUEST_ID),
                // A browser on an allowed origin may make its retries safe too.
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                HeaderName::from_static(X_REQUEST_ID),
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// A client's request id is echoed only when it is short and plain, so it cannot smuggle text
/// into log lines; otherwise a fresh one replaces it.
pub(super) async fn drop_invalid_request_id(mut request: Request, next: Next) -> Response {
    let valid = request
        .headers()
        .get(X_REQUEST_ID)
        .is_none_or(|value| is_plain_request_id(value.as_bytes()));
    if !valid {
        request.headers_mut().remove(X_REQUEST_ID);
    }
    next.run(request).await
}

/// Answers 413 from the declared length alone, before any handler reads the body.
pub(super) async fn reject_oversized_bodies(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Error::PayloadTooLarge.into_response();
    }
    next.run(request).await
}

/// One log line and the metrics per request, with the cause of any 5xx. Logged here rather than
/// where errors are built, so that every line carries the request id, route, status and latency.
pub(super) async fn observe_requests(
    State(auth): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("")
        .to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    auth.metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.to_string(),
            route: route.clone(),
            status,
        })
        .inc();
    auth.metrics
        .latency
        .get_or_create(&RouteLabels {
            method: method.to_string(),
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    match response.extensions().get::<ErrorCause>() {
        Some(ErrorCause(cause)) => {
            tracing::error!(%method, %route, status, latency_ms, request_id, cause, "request failed")
        }
        None => tracing::info!(%method, %route, status, latency_ms, request_id, "request"),
    }
    response
}
