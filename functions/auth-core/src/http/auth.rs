//! Registration, sign-in, token refresh and sign-out.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::AppState;
use super::cookies::{
    check_origin, refresh_cookie, refresh_cookie_value, refresh_cookie_values, token_response,
};
use super::extract::{Client, JsonBody, OptionalJsonBody, bearer_token};
use super::idempotency::idempotency_key;
use super::responses::TokenResponse;
use crate::config::EmailVerification;
use crate::error::{Error, Problem};
use crate::metrics::OutcomeLabels;

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

#[derive(Deserialize, ToSchema)]
pub struct RefreshBody {
    /// Omit it (or send no body) to use the refresh cookie.
    refresh_token: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct LogoutBody {
    refresh_token: Option<String>,
}

/// Register an account and start its first session.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth",
    request_body = Credentials,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
        description = "Makes a retry safe: the same key with the same email and password within a day gets 201 for the account the first request created (in a new session), whatever became of the first answer; a key used for a different request gets 422.")),
    responses(
        (status = 201, description = "Registered and signed in; the refresh cookie is set. With AUTH_EMAIL_VERIFICATION=optional a verification link is mailed too", body = TokenResponse,
            headers(("Set-Cookie" = String, description = "refresh_token=...; HttpOnly; SameSite=Strict; Path=/api/v1/auth; Max-Age=...; Secure"))),
        (status = 202, description = "With AUTH_EMAIL_VERIFICATION=required: the same answer for a new and a taken email (a new one is mailed a link, a taken one's owner a notice); no tokens", body = super::email::Accepted,
            example = json!({"status": "verification_sent"})),
        (status = 400, response = Problem), (status = 409, response = Problem), (status = 413, response = Problem),
        (status = 415, response = Problem), (status = 422, response = Problem), (status = 429, response = Problem),
        (status = 503, response = Problem), (status = 500, response = Problem),
    ))]
pub(crate) async fn register(
    State(auth): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<Response, Error> {
    let idempotency_key = idempotency_key(&headers)?;
    if auth.config.email_verification == EmailVerification::Required {
        auth.register_unverified(
            &body.email,
            &body.password,
            idempotency_key,
            &client,
            OffsetDateTime::now_utc(),
        )
        .await?;
        return Ok(super::email::accepted("verification_sent"));
    }
    let signed_in = auth
        .register(
            &body.email,
            &body.password,
            idempotency_key,
            &client,
            OffsetDateTime::now_utc(),
        )
        .await?;
    Ok(token_response(
        &auth,
        &headers,
        StatusCode::CREATED,
        signed_in,
    ))
}

/// Sign in: a new session. With AUTH_EMAIL_VERIFICATION=required, an account whose email is not
/// verified gets 403 `email_unverified`, only after the password matched.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = Credentials,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
        description = "Makes a retry safe: the same key with the same email and password within a day gets 200 with the session the first request started (the same refresh token, a new access token) while that session lives and its refresh token is unused; otherwise, or for another account, 422.")),
    responses(
        (status = 200, description = "Signed in; the refresh cookie is set", body = TokenResponse,
            headers(("Set-Cookie" = String, description = "the refresh cookie"))),
        (status = 400, response = Problem), (status = 401, response = Problem),
        (status = 403, response = Problem), (status = 413, response = Problem),
        (status = 415, response = Problem), (status = 422, response = Problem), (status = 429, response = Problem),
        (status = 503, response = Problem), (status = 500, response = Problem),
    ))]
pub(crate) async fn login(
    State(auth): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<Response, Error> {
    let idempotency_key = idempotency_key(&headers)?;
    let result = auth
        .login(
            &body.email,
            &body.password,
            idempotency_key,
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
    Ok(token_response(&auth, &headers, StatusCode::OK, result?))
}

/// Rotate the refresh token and get a new access token.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body(content = Option<RefreshBody>, description = "The refresh token, or no body to use the cookie"),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
        description = "Accepted (checked for shape) and not needed: a refresh is retried safely by sending the same refresh token again within AUTH_REFRESH_REUSE_GRACE_SECS, which gets the same new refresh token.")),
    responses(
        (status = 200, description = "The refresh token was rotated; the cookie is set", body = TokenResponse,
            headers(("Set-Cookie" = String, description = "the refresh cookie"))),
        (status = 400, response = Problem), (status = 401, response = Problem), (status = 403, response = Problem),
        (status = 413, response = Problem), (status = 415, response = Problem), (status = 503, response = Problem),
        (status = 500, response = Problem),
    ))]
pub(crate) async fn refresh(
    State(auth): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<RefreshBody>,
) -> Result<Response, Error> {
    // The reuse grace already makes a retry get the first answer; the key adds nothing to keep.
    idempotency_key(&headers)?;
    // A browser's fetch may send `{}` with the cookie, so a body without the field falls back to
    // the cookie just as an empty body does.
    let presented = match body.and_then(|body| body.refresh_token) {
        Some(token) => token,
        None => {
            let cookie = refresh_cookie_value(&headers)?.ok_or(Error::InvalidToken {
                presented: false,
                reason: "no refresh token",
            })?;
            check_origin(&auth, &headers)?;
            cookie
        }
    };
    let signed_in = auth
        .refresh(&presented, &client, OffsetDateTime::now_utc())
        .await?;
    Ok(token_response(&auth, &headers, StatusCode::OK, signed_in))
}

/// End every session named by the bearer token, the body's refresh token and the cookie.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    request_body(content = Option<LogoutBody>, description = "Optional refresh token"),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
        description = "Accepted (checked for shape) and not needed: a logout is 204 however often it is sent, and ends whatever sessions it names each time.")),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "Signed out (also when no token, or a dead one, was sent); the cookie is cleared",
            headers(("Set-Cookie" = String, description = "refresh_token=; Max-Age=0"))),
        (status = 400, response = Problem), (status = 403, response = Problem), (status = 413, response = Problem),
        (status = 415, response = Problem), (status = 503, response = Problem), (status = 500, response = Problem),
    ))]
pub(crate) async fn logout(
    State(auth): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<LogoutBody>,
) -> Result<Response, Error> {
    // Ending a session twice is ending it once: nothing to keep for a retry.
    idempotency_key(&headers)?;
    let from_body = body.and_then(|body| body.refresh_token);
    // With two different cookies (one planted), both sessions end: ours, so that clearing the
    // cookie signs the user out, and the planted one, which is nobody's to keep.
    let from_cookies = refresh_cookie_values(&headers);
    if !from_cookies.is_empty() {
        check_origin(&auth, &headers)?;
    }
    // Every session the request names ends: a junk token in the body must not leave the
    // cookie's session alive while the cookie is cleared.
    let refresh: Vec<&str> = from_body
        .iter()
        .chain(&from_cookies)
        .map(String::as_str)
        .collect();
    auth.logout(
        bearer_token(&headers),
        &refresh,
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
