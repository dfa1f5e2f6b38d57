//! The account's sessions.

use axum::extract::{Path, State};
use axum::response::Response;
use time::OffsetDateTime;
use uuid::Uuid;

use super::AppState;
use super::extract::{AuthUser, Client};
use super::idempotency::SignedInChange;
use super::responses::{SessionList, private_json};
use crate::error::{Error, Problem};

/// The account's live sessions, newest first; `current` marks the caller's.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions", security(("bearer" = [])),
    responses((status = 200, body = SessionList), (status = 401, response = Problem), (status = 503, response = Problem)))]
pub(crate) async fn sessions(
    State(auth): State<AppState>,
    AuthUser(subject): AuthUser,
) -> Result<Response, Error> {
    let sessions = auth.sessions(subject, OffsetDateTime::now_utc()).await?;
    Ok(private_json(SessionList {
        sessions: sessions.into_iter().map(Into::into).collect(),
    }))
}

/// End one session of the account.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path, description = "A session id from the list"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = super::idempotency::SIGNED_IN_KEY)),
    responses(
        (status = 204, description = "Ended"),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 404, response = Problem),
        (status = 422, response = Problem),
        (status = 503, response = Problem),
    ))]
pub(crate) async fn revoke_session(
    State(auth): State<AppState>,
    caller: SignedInChange,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let id = Uuid::parse_str(&id).map_err(|_| Error::NotFound)?;
    caller
        .once(&auth, &[id.as_bytes().as_slice()], |subject, keyed| {
            auth.revoke_session(subject, id, keyed, &client, OffsetDateTime::now_utc())
        })
        .await
}

/// End every session of the account but the caller's.
#[utoipa::path(delete, path = "/api/v1/sessions", tag = "sessions", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = super::idempotency::SIGNED_IN_KEY)),
    responses((status = 204, description = "Every other session has ended"), (status = 400, response = Problem),
        (status = 401, response = Problem), (status = 422, response = Problem), (status = 503, response = Problem)))]
pub(crate) async fn revoke_other_sessions(
    State(auth): State<AppState>,
    caller: SignedInChange,
    Client(client): Client,
) -> Result<Response, Error> {
    caller
        .once(&auth, &[], |subject, keyed| {
            auth.revoke_other_sessions(subject, keyed, &client, OffsetDateTime::now_utc())
        })
        .await
}
