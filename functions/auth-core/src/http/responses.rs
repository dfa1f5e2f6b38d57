//! The JSON the API answers with, and how the use cases' results map onto it.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::service::{Account, SecurityEvent, SessionInfo, SignedIn};

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Whether the address was verified through a mailed link; absent while verification is
    /// off (AUTH_EMAIL_VERIFICATION).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

impl From<Account> for UserView {
    fn from(account: Account) -> Self {
        UserView {
            id: account.id,
            email: account.email,
            created_at: account.created_at,
            email_verified: account.email_verified,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_used_at: OffsetDateTime,
    /// The session's absolute end; the idle limit can end it sooner.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub current: bool,
}

impl From<SessionInfo> for SessionView {
    fn from(info: SessionInfo) -> Self {
        let session = info.session;
        SessionView {
            id: session.id,
            created_at: session.created_at,
            last_used_at: session.last_used_at,
            expires_at: session.expires_at,
            ip: session.ip,
            user_agent: session.user_agent,
            current: info.current,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EventView {
    /// registered, login_succeeded, login_failed, refreshed_reuse_detected, logged_out,
    /// session_revoked, password_changed, email_verified, password_reset_requested or
    /// password_reset.
    #[serde(rename = "type")]
    #[schema(example = "login_succeeded")]
    pub kind: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl From<SecurityEvent> for EventView {
    fn from(event: SecurityEvent) -> Self {
        EventView {
            kind: event.kind,
            at: event.at,
            ip: event.ip,
            user_agent: event.user_agent,
        }
    }
}

/// The token response of register, login and refresh.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Grant)]
pub struct TokenResponse {
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    pub access_token: String,
    pub expires_in: u64,
    /// Absent when the request carried an `Origin` header (a browser): the refresh token is then
    /// only in the HttpOnly cookie, out of reach of script on the page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub refresh_expires_in: u64,
    pub user: UserView,
}

impl TokenResponse {
    pub fn new(signed_in: SignedIn, with_refresh_token: bool) -> Self {
        TokenResponse {
            token_type: "Bearer",
            access_token: signed_in.access_token,
            expires_in: signed_in.expires_in,
            refresh_token: with_refresh_token.then_some(signed_in.refresh_token),
            refresh_expires_in: signed_in.refresh_expires_in,
            user: signed_in.account.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
}

/// A body about the caller: never kept by a cache.
pub(super) fn private_json<T: Serialize>(value: T) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(value),
    )
        .into_response()
}

pub(super) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
