//! The signed-in account.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::AppState;
use super::extract::{AuthUser, Client, JsonBody, required_bearer_token};
use super::idempotency::SignedInChange;
use super::responses::{EventList, UserView, private_json};
use crate::error::{Error, Problem};

/// Who the caller is.
#[utoipa::path(get, path = "/api/v1/me", tag = "account", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, response = Problem), (status = 503, response = Problem)))]
pub(crate) async fn me(
    State(auth): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let token = required_bearer_token(&headers)?;
    let account = auth.me(token, OffsetDateTime::now_utc()).await?;
    Ok(private_json(UserView::from(account)))
}

#[derive(Deserialize, ToSchema)]
pub struct ChangePassword {
    current_password: String,
    new_password: String,
}

/// Change the password; every other session ends.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "account", security(("bearer" = [])),
    request_body = ChangePassword,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = super::idempotency::SIGNED_IN_KEY)),
    responses(
        (status = 204, description = "Changed; every other session has ended"),
        (status = 400, response = Problem), (status = 401, response = Problem), (status = 403, response = Problem),
        (status = 413, response = Problem), (status = 415, response = Problem), (status = 422, response = Problem),
        (status = 429, response = Problem), (status = 503, response = Problem), (status = 500, response = Problem),
    ))]
pub(crate) async fn change_password(
    State(auth): State<AppState>,
    caller: SignedInChange,
    Client(client): Client,
    JsonBody(body): JsonBody<ChangePassword>,
) -> Result<Response, Error> {
    let request = [
        body.current_password.as_bytes(),
        body.new_password.as_bytes(),
    ];
    caller
        .once(&auth, &request, |subject, keyed| {
            auth.change_password(
                subject,
                &body.current_password,
                &body.new_password,
                keyed,
                &client,
                OffsetDateTime::now_utc(),
            )
        })
        .await
}

#[derive(Deserialize, ToSchema)]
pub struct DeleteAccount {
    password: String,
}

/// Delete the account with its sessions, tokens and events; the email can register again.
#[utoipa::path(delete, path = "/api/v1/me", tag = "account", security(("bearer" = [])),
    request_body = DeleteAccount,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = super::idempotency::SIGNED_IN_KEY)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = Problem), (status = 401, response = Problem), (status = 403, response = Problem),
        (status = 413, response = Problem), (status = 415, response = Problem), (status = 422, response = Problem),
        (status = 429, response = Problem), (status = 503, response = Problem), (status = 500, response = Problem),
    ))]
pub(crate) async fn delete_account(
    State(auth): State<AppState>,
    caller: SignedInChange,
    Client(client): Client,
    JsonBody(body): JsonBody<DeleteAccount>,
) -> Result<Response, Error> {
    caller
        .once(&auth, &[body.password.as_bytes()], |subject, keyed| {
            auth.delete_account(
                subject,
                &body.password,
                keyed,
                &client,
                OffsetDateTime::now_utc(),
            )
        })
        .await
}

/// The newest 50 security events of the account.
#[utoipa::path(get, path = "/api/v1/me/events", tag = "account", security(("bearer" = [])),
    responses((status = 200, body = EventList), (status = 401, response = Problem), (status = 503, response = Problem)))]
pub(crate) async fn events(
    State(auth): State<AppState>,
    AuthUser(subject): AuthUser,
) -> Result<Response, Error> {
    let events = auth.events(subject).await?;
    Ok(private_json(EventList {
        events: events.into_iter().map(Into::into).collect(),
    }))
}
