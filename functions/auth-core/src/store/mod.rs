//! Every SQL statement of the service, and nothing else: parameterised queries only, no calls
//! back into service or token code. One file per group of tables.

/// The columns of [`UserRow`] for a `users` table aliased `u`, read back by `users::user_from`.
macro_rules! user_columns {
    () => {
        "u.id, u.email, u.password_hash, u.created_at, u.email_verified_at"
    };
}

/// The one definition of a live session, for a `sessions` table aliased `s`: not revoked, not
/// past its absolute end, and used within the idle limit. `$now` and `$idle_since` name the
/// statement's parameters holding the current time and the current time less the idle limit.
macro_rules! session_is_live {
    ($now:literal, $idle_since:literal) => {
        concat!(
            "(s.revoked_at IS NULL AND s.expires_at > ",
            $now,
            " AND s.last_used_at > ",
            $idle_since,
            ")"
        )
    };
}

mod cached;
mod email;
mod events;
mod idempotency;
mod keys;
mod limits;
mod sessions;
mod users;

pub use email::{
    ClaimedMail, LinkPurpose, MailOutcome, NewMail, claim_due_mail, delete_email_tokens,
    enqueue_mail, finish_mail, insert_email_token, mark_email_verified, peek_email_token,
    prune_mail, reset_password_hash, revoke_all_sessions, take_email_token,
};
pub use events::{EventRow, EventType, recent_events, record_event};
pub use idempotency::{KeptRequest, RequestClaim, claim_request, find_request, first_token_unused};
pub use keys::{
    KeyScheduleEntry, applied_migration_version, insert_key, insert_secret_if_absent, key_schedule,
    load_keys, lock_key_schedule, read_secret, wipe_private_keys,
};
pub use limits::{
    clear_password_failures, password_backoff, prune_expired, record_password_failure,
    take_rate_limit,
};
pub use sessions::{
    NewSession, RotatedSession, Rotation, SessionCheck, SessionRow, end_sessions_beyond,
    live_sessions, revoke_other_sessions, revoke_session, revoke_user_session,
    rotate_refresh_token, session_for_refresh_token, start_session, users_of_live_sessions,
};
pub use users::{
    KeyClaim, UserRow, claim_idempotency_key, delete_user, find_user, find_user_by_email,
    insert_user, lock_user_with_password, set_password_hash,
};

/// Durations travel as seconds for `make_interval`: tokio-postgres has no `interval` mapping.
fn to_interval(duration: time::Duration) -> f64 {
    duration.as_seconds_f64()
}
