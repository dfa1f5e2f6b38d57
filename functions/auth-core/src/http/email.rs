//! Email verification and password reset (docs/api.md, "Email").

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Client, JsonBody};
use super::idempotency::idempotency_key;
use super::responses::no_content;
use crate::error::{Error, Problem};

#[derive(Deserialize, ToSchema)]
pub struct LinkToken {
    /// The token from the link's fragment (`#token=...`).
    #[schema(max_length = 64)]
    token: String,
}

#[derive(Deserialize, ToSchema)]
pub struct EmailOnly {
    /// Any string: one that cannot be an account's address gets the same 202 as an unknown one,
    /// so the answer never says whether an address is valid or registered.
    #[schema(example = "ann@example.com")]
    email: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ResetConfirmation {
    #[schema(max_length = 64)]
    token: String,
    #[schema(min_length = 8, max_length = 256)]
    new_password: String,
}

/// The one body of every 202 here: the same whatever the address, so it says nothing about it.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    #[schema(example = "verification_sent")]
    status: &'static str,
}

/// The OpenAPI description of the header on a request that uses a link.
const LINK_KEY: &str = "Makes a retry safe: the same key with the same link (and, for a reset, the same new password) within a day gets the first answer (204) even though the first request used up the link, instead of 400 `invalid_link`; the key is scoped to the link, and with the same link and another new password gets 422.";
/// The OpenAPI description of the header on a request that names an address.
const ADDRESS_KEY: &str = "Makes a retry safe: the same key with the same email within a day gets the first answer (202) without mailing again or counting against the limits; the same key with another email gets 422.";

/// A 202 with `status`, never cached.
pub(crate) fn accepted(status: &'static str) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(Accepted { status }),
    )
        .into_response()
}

/// Verify the email with the token from a mailed link. A token that is unknown, used or expired
/// gets 400 `invalid_link`.
#[utoipa::path(post, path = "/api/v1/auth/verify-email", tag = "email",
    request_body = LinkToken,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = LINK_KEY)),
    responses(
        (status = 204, description = "Verified; `email_verified` is recorded"),
        (status = 400, response = Problem),
        (status = 413, response = Problem), (status = 415, response = Problem), (status = 422, response = Problem),
        (status = 503, response = Problem), (status = 500, response = Problem),
    ))]
pub(crate) async fn verify_email(
    State(auth): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LinkToken>,
) -> Result<Response, Error> {
    let key = idempotency_key(&headers)?;
    auth.verify_email(&body.token, key, &client, OffsetDateTime::now_utc())
        .await?;
    Ok(no_content())
}

/// Mail a new verification link to an unverified account.
#[utoipa::path(post, path = "/api/v1/auth/verify-email/resend", tag = "email",
    request_body = EmailOnly,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = ADDRESS_KEY)),
    responses(
        (status = 202, description = "Always the same answer: a link is mailed only when the account exists and is unverified", body = Accepted,
            example = json!({"status": "verification_sent"})),
        (status = 400, response = Problem), (status = 413, response = Problem), (status = 415, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem), (status = 503, response = Problem), (status = 500, response = Problem),
    ))]
pub(crate) async fn resend_verification(
    State(auth): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonBody(body): JsonBody<EmailOnly>,
) -> Result<Response, Error> {
    let key = idempotency_key(&headers)?;
    auth.resend_verification(&body.email, key, &client, OffsetDateTime::now_utc())
        .await?;
    Ok(accepted("verification_sent"))
}

/// Ask for a password reset link.
#[utoipa::path(post, path = "/api/v1/auth/password-reset", tag = "email",
    request_body = EmailOnly,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = ADDRESS_KEY)),
    responses(
        (status = 202, description = "Always the same answer: a link (30 minutes, single use) is mailed only when the account exists; older links stop working", body = Accepted,
            example = json!({"status": "reset_sent"})),
        (status = 400, response = Problem), (status = 413, response = Problem), (status = 415, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem), (status = 503, response = Problem), (status = 500, response = Problem),
    ))]
pub(crate) async fn request_password_reset(
    State(auth): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonBody(body): JsonBody<EmailOnly>,
) -> Result<Response, Error> {
    let key = idempotency_key(&headers)?;
    auth.request_password_reset(&body.email, key, &client, OffsetDateTime::now_utc())
        .await?;
    Ok(accepted("reset_sent"))
}

/// Set a new password with the token from a reset link; every session ends. A token that is
/// unknown, used, expired or superseded gets 400 `invalid_link`; a password the policy refuses
/// gets 422 and leaves the link working.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/confirm", tag = "email",
    request_body = ResetConfirmation,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = LINK_KEY)),
    responses(
        (status = 204, description = "The password is set; every session has ended; a notice is mailed"),
        (status = 400, response = Problem),
        (status = 413, response = Problem), (status = 415, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem), (status = 503, response = Problem), (status = 500, response = Problem),
    ))]
pub(crate) async fn confirm_password_reset(
    State(auth): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ResetConfirmation>,
) -> Result<Response, Error> {
    let key = idempotency_key(&headers)?;
    auth.confirm_password_reset(
        &body.token,
        &body.new_password,
        key,
        &client,
        OffsetDateTime::now_utc(),
    )
    .await?;
    Ok(no_content())
}
