//! The security events shown to an account's owner.

use super::cached;
use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Error;

/// Security event types, as stored and as shown to the account's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Registered,
    LoginSucceeded,
    LoginFailed,
    RefreshedReuseDetected,
    LoggedOut,
    SessionRevoked,
    PasswordChanged,
    EmailVerified,
    PasswordResetRequested,
    PasswordReset,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Registered => "registered",
            EventType::LoginSucceeded => "login_succeeded",
            EventType::LoginFailed => "login_failed",
            EventType::RefreshedReuseDetected => "refreshed_reuse_detected",
            EventType::LoggedOut => "logged_out",
            EventType::SessionRevoked => "session_revoked",
            EventType::PasswordChanged => "password_changed",
            EventType::EmailVerified => "email_verified",
            EventType::PasswordResetRequested => "password_reset_requested",
            EventType::PasswordReset => "password_reset",
        }
    }
}

/// Events kept per account; the API shows the newest 50.
const EVENTS_KEPT_PER_USER: i64 = 200;

/// Records an event and, in the same statement, drops the account's oldest beyond
/// `EVENTS_KEPT_PER_USER`, so that its history stays bounded without a cleanup job or another
/// round trip.
pub async fn record_event(
    db: &impl GenericClient,
    user_id: Uuid,
    event: EventType,
    at: OffsetDateTime,
    ip: Option<&str>,
    user_agent: Option<&str>,
) -> Result<(), Error> {
    // The DELETE's subquery reads the table as it was before this statement's INSERT, so it keeps
    // one fewer of the older events to make room for the new one.
    cached::execute(
        db,
        "WITH recorded AS ( \
             INSERT INTO security_events (id, user_id, type, at, ip, user_agent) \
             VALUES ($1, $2, $3, $4, $5, $6)) \
         DELETE FROM security_events WHERE user_id = $2 AND id IN \
         (SELECT id FROM security_events WHERE user_id = $2 ORDER BY at DESC, id DESC OFFSET $7)",
        &[
            &Uuid::now_v7(),
            &user_id,
            &event.as_str(),
            &at,
            &ip,
            &user_agent,
            &(EVENTS_KEPT_PER_USER - 1),
        ],
    )
    .await?;
    Ok(())
}

pub struct EventRow {
    pub kind: String,
    pub at: OffsetDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

pub async fn recent_events(
    db: &impl GenericClient,
    user_id: Uuid,
    limit: i64,
) -> Result<Vec<EventRow>, Error> {
    let rows = cached::query(
        db,
        "SELECT type, at, ip, user_agent FROM security_events WHERE user_id = $1 \
             ORDER BY at DESC, id DESC LIMIT $2",
        &[&user_id, &limit],
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok(EventRow {
                kind: row.try_get(0)?,
                at: row.try_get(1)?,
                ip: row.try_get(2)?,
                user_agent: row.try_get(3)?,
            })
        })
        .collect()
}
