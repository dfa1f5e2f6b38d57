//! The HTTP face of the service: router, extractors, thin handlers and middleware.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Request, State,
};
use axum::handler::HandlerWithoutStateExt;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, ErrorCause};
use crate::metrics::{OutcomeLabels, RequestLabels, RouteLabels};
use crate::openapi::Problem;
use crate::service::{Auth, ClientInfo};
use crate::service::{EventView, Grant, SessionView, UserView};
use crate::token::TokenSubject;

pub const MAX_BODY_BYTES: usize = 16 * 1024;
pub const REFRESH_COOKIE: &str = "refresh_token";
const COOKIE_PATH: &str = "/api/v1/auth";
const X_REQUEST_ID: &str = "x-request-id";

pub type AppState = Arc<Auth>;

/// Builds the whole service. The same router is served by the container, the Lambda and the tests.
pub fn router(auth: AppState) -> Router {
    let static_dir = auth.config.static_dir.clone();
    let cors = cors_layer(&auth.config.allowed_origins);
    let api = Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/me", get(me).delete(delete_account))
        .route("/api/v1/me/password", post(change_password))
        .route("/api/v1/me/events", get(events))
        .route(
            "/api/v1/sessions",
            get(sessions).delete(revoke_other_sessions),
        )
        .route("/api/v1/sessions/{id}", delete(revoke_session))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // Must follow every route: it only applies to routes already added.
        .method_not_allowed_fallback(method_not_allowed);
    let api = match static_dir {
        Some(dir) => api.fallback_service(
            ServeDir::new(dir)
                .call_fallback_on_method_not_allowed(true)
                .not_found_service(not_found.into_service()),
        ),
        None => api.fallback(not_found),
    };
    // Layers run outermost last-added: the request id is set first, so the log line and every
    // response (errors and CORS preflights included) carry it; the size check runs before any
    // body is read.
    // The body deadline makes a slow upload fail the read (400) instead of pinning the request.
    let api = api
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyTimeoutLayer::new(auth.config.body_read_timeout))
        .layer(middleware::from_fn(reject_oversized_bodies))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&auth),
            limit_request_time,
        ));
    let api = match cors {
        Some(cors) => api.layer(cors),
        None => api,
    };
    api.layer(SetResponseHeaderLayer::overriding(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ))
    .layer(PropagateRequestIdLayer::x_request_id())
    .layer(middleware::from_fn_with_state(
        Arc::clone(&auth),
        observe_requests,
    ))
    .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
    .layer(middleware::from_fn(drop_invalid_request_id))
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
                None => starting_response(&request),
            }
        }
    })
}

fn starting_response(request: &Request) -> Response {
    let mut response = if request.uri().path() == "/healthz" {
        Json(serde_json::json!({ "status": "starting" })).into_response()
    } else {
        Error::Unavailable("the service is still connecting to its database".into()).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    if let Ok(id) = HeaderValue::from_str(&Uuid::new_v4().to_string()) {
        headers.insert(HeaderName::from_static(X_REQUEST_ID), id);
    }
    response
}

/// Bounds the whole request: past the limit it is abandoned (an open transaction rolls back) and
/// the client gets 503, instead of holding a connection and a worker indefinitely.
async fn limit_request_time(
    State(auth): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(auth.config.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::Unavailable("request timed out".into()).into_response(),
    }
}

/// CORS only for the configured origins, with credentials; none configured means no CORS
/// headers at all, so browsers keep other sites out.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
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
            ])
            .expose_headers([
                HeaderName::from_static(X_REQUEST_ID),
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

async fn not_found() -> Error {
    Error::NotFound
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// A client's request id is echoed only when it is short and plain, so it cannot smuggle text
/// into log lines; otherwise a fresh one replaces it.
async fn drop_invalid_request_id(mut request: Request, next: Next) -> Response {
    let valid = request.headers().get(X_REQUEST_ID).is_none_or(|value| {
        let bytes = value.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 128
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    });
    if !valid {
        request.headers_mut().remove(X_REQUEST_ID);
    }
    next.run(request).await
}

/// Answers 413 from the declared length alone, before any handler reads the body.
async fn reject_oversized_bodies(request: Request, next: Next) -> Response {
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
async fn observe_requests(State(auth): State<AppState>, request: Request, next: Next) -> Response {
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

/// A JSON body: 415 unless `Content-Type: application/json`, 413 over the limit, 400 when it does
/// not parse into `T` (missing field, wrong type, malformed JSON).
pub struct JsonBody<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, Error> {
    match Bytes::from_request(request, state).await {
        Ok(bytes) => Ok(bytes),
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            Err(Error::PayloadTooLarge)
        }
        Err(_) => Err(Error::InvalidRequest("The request body could not be read.")),
    }
}

/// Parses a request body that must be a JSON object. serde would also read a struct from an
/// array (`["a@b.c", "pw"]`), which no client of this API sends on purpose.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let starts_as_object = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|first| *first == b'{');
    let parsed = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            Error::InvalidRequest("A required field is missing or a field has the wrong JSON type.")
        }
        _ => Error::InvalidRequest("The request body is not valid JSON."),
    })?;
    if starts_as_object {
        Ok(parsed)
    } else {
        Err(Error::InvalidRequest(
            "The request body must be a JSON object.",
        ))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = read_body(request, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Like [`JsonBody`], but an empty body is `None` (refresh and logout may rely on the cookie).
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(request.headers());
        let bytes = read_body(request, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJsonBody(None));
        }
        if !json {
            return Err(Error::UnsupportedMediaType);
        }
        // JSON `null` says "nothing here" as plainly as an empty body does.
        if serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|value| value.is_null()) {
            return Ok(OptionalJsonBody(None));
        }
        parse_json(&bytes).map(|value| OptionalJsonBody(Some(value)))
    }
}

/// The bearer token of a request, if it sent one.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The caller of an endpoint that needs a live session's access token.
pub struct AuthUser(pub TokenSubject);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        auth: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer_token(&parts.headers) else {
            return Err(Error::InvalidToken {
                presented: false,
                reason: "no bearer token",
            });
        };
        auth.authenticate(token, OffsetDateTime::now_utc())
            .await
            .map(AuthUser)
    }
}

/// The client's address and user agent. Behind trusted proxies the address is the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy; anyone else's header is ignored.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
        .collect();
    Some(
        forwarded
            .iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer),
    )
}

pub struct Client(pub ClientInfo);

impl FromRequestParts<AppState> for Client {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        auth: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let ip =
            client_ip(peer, &parts.headers, &auth.config.trusted_proxies).map(|ip| ip.to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok());
        Ok(Client(ClientInfo::new(ip, user_agent)))
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

fn refresh_cookie(auth: &Auth, token: &str, max_age: u64) -> HeaderValue {
    let secure = if auth.config.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{REFRESH_COOKIE}={token}; HttpOnly; SameSite=Strict; Path={COOKIE_PATH}; Max-Age={max_age}{secure}"
    );
    // Tokens are base64url, so the value is always a valid header.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A request that authenticates with the cookie must come from our own origin (that of
/// `AUTH_ISSUER`) or an allowed one; browsers always send `Origin` on cross-origin POSTs.
fn check_origin(auth: &Auth, headers: &HeaderMap) -> Result<(), Error> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .ok()
        .and_then(crate::config::normalise_origin)
        .ok_or(Error::ForbiddenOrigin)?;
    let allowed = auth.config.own_origin().as_deref() == Some(origin.as_str())
        || auth.config.allowed_origins.contains(&origin);
    if allowed {
        Ok(())
    } else {
        Err(Error::ForbiddenOrigin)
    }
}

fn token_response(auth: &Auth, status: StatusCode, grant: crate::service::Grant) -> Response {
    let cookie = refresh_cookie(auth, &grant.refresh_token, grant.refresh_expires_in);
    (
        status,
        AppendHeaders([
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
            (header::SET_COOKIE, cookie),
        ]),
        Json(grant),
    )
        .into_response()
}

#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    #[schema(example = "ann@example.com", max_length = 254)]
    email: String,
    #[schema(
        example = "correct horse battery staple",
        min_length = 8,
        max_length = 256
    )]
    password: String,
}

/// Register an account and start its first session.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth",
    request_body = Credentials,
    responses(
        (status = 201, description = "Registered and signed in; the refresh cookie is set", body = Grant,
            headers(("Set-Cookie" = String, description = "refresh_token=...; HttpOnly; SameSite=Strict; Path=/api/v1/auth; Max-Age=...; Secure"))),
        (status = 400, response = Problem), (status = 409, response = Problem), (status = 413, response = Problem),
        (status = 415, response = Problem), (status = 422, response = Problem), (status = 429, response = Problem),
        (status = 503, response = Problem), (status = 500, response = Problem),
    ))]
async fn register(
    State(auth): State<AppState>,
    Client(client): Client,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<Response, Error> {
    let grant = auth
        .register(
            &body.email,
            &body.password,
            &client,
            OffsetDateTime::now_utc(),
        )
        .await?;
    Ok(token_response(&auth, StatusCode::CREATED, grant))
}

/// Sign in: a new session.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = Credentials,
    responses(
        (status = 200, description = "Signed in; the refresh cookie is set", body = Grant,
            headers(("Set-Cookie" = String, description = "the refresh cookie"))),
        (status = 400, response = Problem), (status = 401, response = Problem), (status = 413, response = Problem),
        (status = 415, response = Problem), (status = 429, response = Problem), (status = 503, response = Problem),
        (status = 500, response = Problem),
    ))]
async fn login(
    State(auth): State<AppState>,
    Client(client): Client,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<Response, Error> {
    let result = auth
        .login(
            &body.email,
            &body.password,
            &client,
            OffsetDateTime::now_utc(),
        )
        .await;
    let outcome = match &result {
        Ok(_) => "succeeded",
        Err(Error::InvalidCredentials) => "failed",
        Err(Error::TooManyRequests { .. }) => "throttled",
        Err(Error::Overloaded { .. }) => "overloaded",
        Err(_) => "error",
    };
    auth.metrics
        .logins
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
    Ok(token_response(&auth, StatusCode::OK, result?))
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshBody {
    /// Omit it (or send no body) to use the refresh cookie.
    refresh_token: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct LogoutBody {
    refresh_token: Option<String>,
}

/// Rotate the refresh token and get a new access token.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body(content = Option<RefreshBody>, description = "The refresh token, or no body to use the cookie"),
    responses(
        (status = 200, description = "The refresh token was rotated; the cookie is set", body = Grant,
            headers(("Set-Cookie" = String, description = "the refresh cookie"))),
        (status = 400, response = Problem), (status = 401, response = Problem), (status = 403, response = Problem),
        (status = 413, response = Problem), (status = 415, response = Problem), (status = 503, response = Problem),
        (status = 500, response = Problem),
    ))]
async fn refresh(
    State(auth): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<RefreshBody>,
) -> Result<Response, Error> {
    // A browser's fetch may send `{}` with the cookie, so a body without the field falls back to
    // the cookie just as an empty body does.
    let presented = match body.and_then(|body| body.refresh_token) {
        Some(token) => token,
        None => {
            let cookie = cookie_value(&headers, REFRESH_COOKIE).ok_or(Error::InvalidToken {
                presented: false,
                reason: "no refresh token",
            })?;
            check_origin(&auth, &headers)?;
            cookie.to_owned()
        }
    };
    let grant = auth
        .refresh(&presented, &client, OffsetDateTime::now_utc())
        .await?;
    Ok(token_response(&auth, StatusCode::OK, grant))
}

/// End the session named by the bearer token and/or the refresh token (body or cookie).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    request_body(content = Option<LogoutBody>, description = "Optional refresh token"),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "Signed out (also when no token, or a dead one, was sent); the cookie is cleared",
            headers(("Set-Cookie" = String, description = "refresh_token=; Max-Age=0"))),
        (status = 400, response = Problem), (status = 403, response = Problem), (status = 413, response = Problem),
        (status = 415, response = Problem), (status = 503, response = Problem), (status = 500, response = Problem),
    ))]
async fn logout(
    State(auth): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<LogoutBody>,
) -> Result<Response, Error> {
    let from_body = body.and_then(|body| body.refresh_token);
    let from_cookie = cookie_value(&headers, REFRESH_COOKIE);
    if from_body.is_none() && from_cookie.is_some() {
        check_origin(&auth, &headers)?;
    }
    let refresh = from_body.as_deref().or(from_cookie);
    auth.logout(
        bearer_token(&headers),
        refresh,
        &client,
        OffsetDateTime::now_utc(),
    )
    .await?;
    Ok((
        StatusCode::NO_CONTENT,
        AppendHeaders([
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::SET_COOKIE, refresh_cookie(&auth, "", 0)),
        ]),
    )
        .into_response())
}

fn private_json<T: serde::Serialize>(value: T) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(value),
    )
        .into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Who the caller is.
#[utoipa::path(get, path = "/api/v1/me", tag = "account", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, response = Problem), (status = 503, response = Problem)))]
async fn me(State(auth): State<AppState>, AuthUser(subject): AuthUser) -> Result<Response, Error> {
    Ok(private_json(auth.me(subject).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct ChangePassword {
    current_password: String,
    new_password: String,
}

/// Change the password; every other session ends.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "account", security(("bearer" = [])),
    request_body = ChangePassword,
    responses(
        (status = 204, description = "Changed; every other session has ended"),
        (status = 400, response = Problem), (status = 401, response = Problem), (status = 403, response = Problem),
        (status = 413, response = Problem), (status = 415, response = Problem), (status = 422, response = Problem),
        (status = 503, response = Problem), (status = 500, response = Problem),
    ))]
async fn change_password(
    State(auth): State<AppState>,
    AuthUser(subject): AuthUser,
    Client(client): Client,
    JsonBody(body): JsonBody<ChangePassword>,
) -> Result<Response, Error> {
    auth.change_password(
        subject,
        &body.current_password,
        &body.new_password,
        &client,
        OffsetDateTime::now_utc(),
    )
    .await?;
    Ok(no_content())
}

#[derive(Deserialize, ToSchema)]
pub struct DeleteAccount {
    password: String,
}

/// Delete the account with its sessions, tokens and events; the email can register again.
#[utoipa::path(delete, path = "/api/v1/me", tag = "account", security(("bearer" = [])),
    request_body = DeleteAccount,
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = Problem), (status = 401, response = Problem), (status = 403, response = Problem),
        (status = 413, response = Problem), (status = 415, response = Problem), (status = 503, response = Problem),
        (status = 500, response = Problem),
    ))]
async fn delete_account(
    State(auth): State<AppState>,
    AuthUser(subject): AuthUser,
    JsonBody(body): JsonBody<DeleteAccount>,
) -> Result<Response, Error> {
    auth.delete_account(subject, &body.password).await?;
    Ok(no_content())
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    events: Vec<EventView>,
}

/// The newest 50 security events of the account.
#[utoipa::path(get, path = "/api/v1/me/events", tag = "account", security(("bearer" = [])),
    responses((status = 200, body = EventList), (status = 401, response = Problem), (status = 503, response = Problem)))]
async fn events(
    State(auth): State<AppState>,
    AuthUser(subject): AuthUser,
) -> Result<Response, Error> {
    Ok(private_json(EventList {
        events: auth.events(subject).await?,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    sessions: Vec<SessionView>,
}

/// The account's live sessions, newest first; `current` marks the caller's.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions", security(("bearer" = [])),
    responses((status = 200, body = SessionList), (status = 401, response = Problem), (status = 503, response = Problem)))]
async fn sessions(
    State(auth): State<AppState>,
    AuthUser(subject): AuthUser,
) -> Result<Response, Error> {
    Ok(private_json(SessionList {
        sessions: auth.sessions(subject, OffsetDateTime::now_utc()).await?,
    }))
}

/// End one session of the account.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path, description = "A session id from the list")),
    responses(
        (status = 204, description = "Ended"),
        (status = 401, response = Problem),
        (status = 404, response = Problem),
        (status = 503, response = Problem),
    ))]
async fn revoke_session(
    State(auth): State<AppState>,
    AuthUser(subject): AuthUser,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let id = Uuid::parse_str(&id).map_err(|_| Error::NotFound)?;
    auth.revoke_session(subject, id, &client, OffsetDateTime::now_utc())
        .await?;
    Ok(no_content())
}

/// End every session of the account but the caller's.
#[utoipa::path(delete, path = "/api/v1/sessions", tag = "sessions", security(("bearer" = [])),
    responses((status = 204, description = "Every other session has ended"), (status = 401, response = Problem), (status = 503, response = Problem)))]
async fn revoke_other_sessions(
    State(auth): State<AppState>,
    AuthUser(subject): AuthUser,
    Client(client): Client,
) -> Result<Response, Error> {
    auth.revoke_other_sessions(subject, &client, OffsetDateTime::now_utc())
        .await?;
    Ok(no_content())
}

/// The public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "keys",
    responses((status = 200, description = "JWKS: every key that signed a still-valid token, and the next key", body = Object,
        content_type = "application/jwk-set+json",
        headers(("Cache-Control" = String, description = "public, max-age=300"))), (status = 503, response = Problem)))]
async fn jwks(State(auth): State<AppState>) -> Result<Response, Error> {
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
async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}

/// 200 while the process serves.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Serving", body = Object)))]
async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// 200 when the database answers and is migrated, else 503.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Object), (status = 503, response = Problem)))]
async fn readyz(State(auth): State<AppState>) -> Response {
    if auth.ready().await {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        Error::Unavailable("readiness check failed".into()).into_response()
    }
}

/// Prometheus metrics. Expose this port to operators only: the front-end proxies nothing here.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String)))]
async fn metrics(State(auth): State<AppState>) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.3")]);
        let untrusted_peer = "192.0.2.1".parse().ok();
        assert_eq!(client_ip(untrusted_peer, &xff, &trusted), untrusted_peer);
        let proxy = "10.0.0.2".parse().ok();
        assert_eq!(
            client_ip(proxy, &xff, &trusted),
            "198.51.100.7".parse().ok()
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        assert_eq!(
            client_ip(proxy, &headers(&[("x-forwarded-for", "garbage")]), &trusted),
            proxy
        );
    }

    #[test]
    fn bearer_tokens_and_cookies_are_found() {
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer ")])),
            None
        );
        let cookies = headers(&[("cookie", "a=1; refresh_token=xyz; b=2")]);
        assert_eq!(cookie_value(&cookies, "refresh_token"), Some("xyz"));
        assert_eq!(cookie_value(&cookies, "refresh"), None);
    }
}
