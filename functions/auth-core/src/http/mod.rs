//! The HTTP face of the service: the router and its layers, extractors, thin handlers by area,
//! and the response types. Handlers parse, call one use case, and map its result.

pub(crate) mod account;
pub(crate) mod auth;
mod cookies;
pub(crate) mod email;
mod extract;
mod idempotency;
mod middleware;
pub(crate) mod ops;
mod responses;
pub(crate) mod sessions;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tower::ServiceExt;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use uuid::Uuid;

use crate::error::Error;
use crate::service::Auth;

pub use extract::{client_ip, is_plain_request_id};
pub use responses::{EventList, EventView, SessionList, SessionView, TokenResponse, UserView};

pub const MAX_BODY_BYTES: usize = 16 * 1024;
pub const REFRESH_COOKIE: &str = "refresh_token";
const X_REQUEST_ID: &str = "x-request-id";

pub type AppState = Arc<Auth>;

/// Builds the whole service. The same router is served by the container, the Lambda and the tests.
pub fn router(auth: AppState) -> Router {
    let static_dir = auth.config.static_dir.clone();
    let api = Router::new()
        .route("/api/v1/auth/register", post(auth::register))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/verify-email", post(email::verify_email))
        .route(
            "/api/v1/auth/verify-email/resend",
            post(email::resend_verification),
        )
        .route(
            "/api/v1/auth/password-reset",
            post(email::request_password_reset),
        )
        .route(
            "/api/v1/auth/password-reset/confirm",
            post(email::confirm_password_reset),
        )
        .route(
            "/api/v1/me",
            get(account::me).delete(account::delete_account),
        )
        .route("/api/v1/me/password", post(account::change_password))
        .route("/api/v1/me/events", get(account::events))
        .route(
            "/api/v1/sessions",
            get(sessions::sessions).delete(sessions::revoke_other_sessions),
        )
        .route("/api/v1/sessions/{id}", delete(sessions::revoke_session))
        .route("/api/v1/openapi.json", get(ops::openapi))
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        // Must follow every route: it only applies to routes already added.
        .method_not_allowed_fallback(method_not_allowed);
    let api = match static_dir {
        Some(dir) => api.fallback_service(
            ServeDir::new(&dir)
                .call_fallback_on_method_not_allowed(true)
                .not_found_service(not_found_page.with_state(dir)),
        ),
        None => api.fallback(not_found),
    };
    // Layers run outermost last-added: the request id is set first, so the log line and every
    // response (errors and CORS preflights included) carry it; the size check runs before any
    // body is read; the body deadline makes a slow upload fail the read (400) instead of
    // pinning the request.
    let api = api
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyTimeoutLayer::new(auth.config.body_read_timeout))
        .layer(axum::middleware::from_fn(
            middleware::reject_oversized_bodies,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&auth),
            middleware::limit_request_time,
        ));
    let api = match middleware::cors_layer(&auth.config.allowed_origins) {
        Some(cors) => api.layer(cors),
        None => api,
    };
    api.layer(SetResponseHeaderLayer::overriding(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ))
    .layer(PropagateRequestIdLayer::x_request_id())
    .layer(axum::middleware::from_fn_with_state(
        Arc::clone(&auth),
        middleware::observe_requests,
    ))
    .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
    .layer(axum::middleware::from_fn(
        middleware::drop_invalid_request_id,
    ))
    .with_state(auth)
}

/// The service while it starts: the real router once `ready` holds it; until then `/healthz` is
/// 200 (the process serves), `/readyz` 503, and everything else 503 `unavailable`.
pub fn starting_router(ready: Arc<std::sync::OnceLock<Router>>) -> Router {
    Router::new().fallback(move |request: Request| {
        let ready = Arc::clone(&ready);
        async move {
            match ready.get() {
                Some(router) => router
                    .clone()
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|never| match never {}),
                None if request.uri().path() == "/healthz" => with_common_headers(
                    &request,
                    axum::Json(serde_json::json!({ "status": "starting" })).into_response(),
                ),
                None => not_ready(
                    &request,
                    &Error::Unavailable("the service is still connecting to its database".into()),
                ),
            }
        }
    })
}

/// The answer to a request that no router can serve yet (the database was never reached, or
/// the service could not start): the contract's 503 `unavailable` for an outage, 500 `internal`
/// otherwise, with the headers the router's layers would have added. The container and the
/// auth Lambda both answer this way.
pub fn not_ready(request: &Request, error: &Error) -> Response {
    let mut response = match error {
        Error::Unavailable(_) => Error::Unavailable("database not reachable".into()),
        _ => Error::internal("starting the service", "see the log"),
    }
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    with_common_headers(request, response)
}

fn with_common_headers(request: &Request, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let request_id = request
        .headers()
        .get(X_REQUEST_ID)
        .filter(|value| is_plain_request_id(value.as_bytes()))
        .cloned()
        .or_else(|| HeaderValue::from_str(&Uuid::new_v4().to_string()).ok());
    if let Some(id) = request_id {
        headers.insert(HeaderName::from_static(X_REQUEST_ID), id);
    }
    response
}

async fn not_found() -> Error {
    Error::NotFound
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// What a path that is neither an API route nor a file answers when the service also serves
/// the front-end: the site's own 404 page for a browser path, as nginx does, and the API's
/// problem document under `/api/` (and wherever the site has no 404 page).
async fn not_found_page(State(dir): State<PathBuf>, request: Request) -> Response {
    if request.uri().path().starts_with("/api/") {
        return Error::NotFound.into_response();
    }
    match tokio::fs::read(dir.join("404.html")).await {
        Ok(page) => (
            StatusCode::NOT_FOUND,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            page,
        )
            .into_response(),
        Err(_) => Error::NotFound.into_response(),
    }
}
