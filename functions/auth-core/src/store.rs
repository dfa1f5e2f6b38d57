//! Every SQL statement of the service, and nothing else. Parameterised queries only.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::config::SigningAlg;
use crate::error::Error;
use crate::token::{NewKey, StoredKey, parse_alg};

/// Names the lock that lets exactly one instance create a signing key or a shared secret.
const KEY_LOCK: i64 = 0x6c61_7463_6b65_7973; // "latckeys"

pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub created_at: OffsetDateTime,
}

fn user_from(row: &tokio_postgres::Row) -> Result<UserRow, Error> {
    Ok(UserRow {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

pub async fn insert_user(db: &impl GenericClient, user: &UserRow) -> Result<(), Error> {
    let result = db
        .execute(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)",
            &[&user.id, &user.email, &user.password_hash, &user.created_at],
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e)
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                && e.as_db_error().and_then(|db| db.constraint()) == Some("users_email_key") =>
        {
            Err(Error::EmailTaken)
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn find_user_by_email(
    db: &impl GenericClient,
    email: &str,
) -> Result<Option<UserRow>, Error> {
    let row = db
        .query_opt(
            "SELECT id, email, password_hash, created_at FROM users WHERE email = $1",
            &[&email],
        )
        .await?;
    row.as_ref().map(user_from).transpose()
}

pub async fn find_user(db: &impl GenericClient, id: Uuid) -> Result<Option<UserRow>, Error> {
    let row = db
        .query_opt(
            "SELECT id, email, password_hash, created_at FROM users WHERE id = $1",
            &[&id],
        )
        .await?;
    row.as_ref().map(user_from).transpose()
}

/// Replaces a hash only if it is still the one that was verified, so a concurrent password change
/// is never overwritten by a transparent re-hash.
pub async fn replace_password_hash(
    db: &impl GenericClient,
    user_id: Uuid,
    old_hash: &str,
    new_hash: &str,
) -> Result<(), Error> {
    db.execute(
        "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
        &[&user_id, &old_hash, &new_hash],
    )
    .await?;
    Ok(())
}

pub struct NewSession<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub now: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

pub async fn insert_session(
    db: &impl GenericClient,
    session: &NewSession<'_>,
) -> Result<(), Error> {
    db.execute(
        "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, ip, user_agent) \
         VALUES ($1, $2, $3, $3, $4, $5, $6)",
        &[
            &session.id,
            &session.user_id,
            &session.now,
            &session.expires_at,
            &session.ip,
            &session.user_agent,
        ],
    )
    .await?;
    Ok(())
}

pub async fn insert_refresh_token(
    db: &impl GenericClient,
    token_hash: &[u8; 32],
    session_id: Uuid,
    now: OffsetDateTime,
) -> Result<(), Error> {
    db.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        &[&token_hash.as_slice(), &session_id, &now],
    )
    .await?;
    Ok(())
}

/// A refresh token with its session, locked for the rest of the transaction.
pub struct RefreshRow {
    pub used_at: Option<OffsetDateTime>,
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub session_expires_at: OffsetDateTime,
    pub session_last_used_at: OffsetDateTime,
    pub session_revoked: bool,
}

/// Locks the token's row and its session's row: concurrent refreshes of one token queue here, so
/// exactly one of them rotates and the others see its result.
pub async fn lock_refresh_token(
    db: &impl GenericClient,
    token_hash: &[u8; 32],
) -> Result<Option<RefreshRow>, Error> {
    let row = db
        .query_opt(
            "SELECT rt.used_at, s.id, s.user_id, s.expires_at, s.last_used_at, s.revoked_at IS NOT NULL AS revoked \
             FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id \
             WHERE rt.token_hash = $1 FOR UPDATE OF rt, s",
            &[&token_hash.as_slice()],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(RefreshRow {
        used_at: row.try_get(0)?,
        session_id: row.try_get(1)?,
        user_id: row.try_get(2)?,
        session_expires_at: row.try_get(3)?,
        session_last_used_at: row.try_get(4)?,
        session_revoked: row.try_get(5)?,
    }))
}

pub async fn session_for_refresh_token(
    db: &impl GenericClient,
    token_hash: &[u8; 32],
) -> Result<Option<Uuid>, Error> {
    let row = db
        .query_opt(
            "SELECT session_id FROM refresh_tokens WHERE token_hash = $1",
            &[&token_hash.as_slice()],
        )
        .await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

pub async fn mark_refresh_token_used(
    db: &impl GenericClient,
    token_hash: &[u8; 32],
    now: OffsetDateTime,
) -> Result<(), Error> {
    db.execute(
        "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1",
        &[&token_hash.as_slice(), &now],
    )
    .await?;
    Ok(())
}

pub async fn touch_session(
    db: &impl GenericClient,
    session_id: Uuid,
    now: OffsetDateTime,
) -> Result<(), Error> {
    db.execute(
        "UPDATE sessions SET last_used_at = $2 WHERE id = $1",
        &[&session_id, &now],
    )
    .await?;
    Ok(())
}

/// Ends a session; returns its user when a live one was ended.
pub async fn revoke_session(
    db: &impl GenericClient,
    session_id: Uuid,
    now: OffsetDateTime,
) -> Result<Option<Uuid>, Error> {
    let row = db
        .query_opt(
            "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING user_id",
            &[&session_id, &now],
        )
        .await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

/// Whether the session behind an access token is still alive: not revoked, not past its
/// absolute end, and used within the idle limit.
pub async fn session_is_alive(
    db: &impl GenericClient,
    session_id: Uuid,
    user_id: Uuid,
    now: OffsetDateTime,
    idle_limit: time::Duration,
) -> Result<bool, Error> {
    let idle_since = now - idle_limit;
    let row = db
        .query_opt(
            "SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL \
             AND expires_at > $3 AND last_used_at > $4",
            &[&session_id, &user_id, &now, &idle_since],
        )
        .await?;
    Ok(row.is_some())
}

pub async fn load_keys(db: &impl GenericClient) -> Result<Vec<StoredKey>, Error> {
    let rows = db
        .query(
            "SELECT kid, alg, public_jwk, private_key, encrypted, signs_from FROM signing_keys ORDER BY signs_from",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let alg: String = row.try_get("alg")?;
            Ok(StoredKey {
                kid: row.try_get("kid")?,
                alg: parse_alg(&alg)
                    .ok_or_else(|| Error::internal("stored key", "unknown algorithm"))?,
                public_jwk: row.try_get("public_jwk")?,
                private_key: row.try_get("private_key")?,
                encrypted: row.try_get("encrypted")?,
                signs_from: row.try_get("signs_from")?,
            })
        })
        .collect()
}

/// The signing schedule as stored: (kid, alg, signs_from) ordered by signs_from.
pub struct KeyScheduleEntry {
    pub alg: SigningAlg,
    pub signs_from: OffsetDateTime,
}

/// Runs `decide` on the current schedule under a lock held for the whole transaction, and stores
/// the keys it returns: however many instances race, each decision sees the others' keys.
pub async fn add_keys_if_needed<F>(
    client: &mut deadpool_postgres::Object,
    decide: F,
) -> Result<usize, Error>
where
    F: FnOnce(&[KeyScheduleEntry]) -> Result<Vec<(NewKey, Vec<u8>, bool, OffsetDateTime)>, Error>,
{
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEY_LOCK])
        .await?;
    let rows = tx
        .query(
            "SELECT alg, signs_from FROM signing_keys ORDER BY signs_from",
            &[],
        )
        .await?;
    let schedule = rows
        .iter()
        .map(|row| {
            let alg: String = row.try_get(0)?;
            Ok(KeyScheduleEntry {
                alg: parse_alg(&alg)
                    .ok_or_else(|| Error::internal("stored key", "unknown algorithm"))?,
                signs_from: row.try_get(1)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let new_keys = decide(&schedule)?;
    let now = OffsetDateTime::now_utc();
    for (key, stored_private, encrypted, signs_from) in &new_keys {
        tx.execute(
            "INSERT INTO signing_keys (kid, alg, public_jwk, private_key, encrypted, created_at, signs_from) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &key.kid,
                &key.alg.as_str(),
                &key.public_jwk,
                &stored_private.as_slice(),
                encrypted,
                &now,
                signs_from,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(new_keys.len())
}

/// Returns the named secret, creating it from `generate` if no instance has yet.
pub async fn get_or_create_secret<F>(
    db: &impl GenericClient,
    name: &str,
    generate: F,
) -> Result<(Vec<u8>, bool), Error>
where
    F: FnOnce() -> Result<(Vec<u8>, bool), Error>,
{
    let (value, encrypted) = generate()?;
    let now = OffsetDateTime::now_utc();
    db.execute(
        "INSERT INTO service_secrets (name, value, encrypted, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO NOTHING",
        &[&name, &value, &encrypted, &now],
    )
    .await?;
    let row = db
        .query_one(
            "SELECT value, encrypted FROM service_secrets WHERE name = $1",
            &[&name],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// The newest applied migration, or `None` before the history table exists.
pub async fn applied_migration_version(db: &impl GenericClient) -> Result<Option<i64>, Error> {
    let exists: bool = db
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(None);
    }
    let row = db
        .query_one(
            "SELECT max(version)::int8 FROM refinery_schema_history",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

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
        }
    }
}

/// Events kept per account; the API shows the newest 50.
const EVENTS_KEPT_PER_USER: i64 = 200;

pub async fn record_event(
    db: &impl GenericClient,
    user_id: Uuid,
    event: EventType,
    at: OffsetDateTime,
    ip: Option<&str>,
    user_agent: Option<&str>,
) -> Result<(), Error> {
    db.execute(
        "INSERT INTO security_events (id, user_id, type, at, ip, user_agent) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&Uuid::now_v7(), &user_id, &event.as_str(), &at, &ip, &user_agent],
    )
    .await?;
    // Keep each account's history bounded without a cleanup job.
    db.execute(
        "DELETE FROM security_events WHERE user_id = $1 AND id IN \
         (SELECT id FROM security_events WHERE user_id = $1 ORDER BY at DESC, id DESC OFFSET $2)",
        &[&user_id, &EVENTS_KEPT_PER_USER],
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
    let rows = db
        .query(
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

pub struct SessionRow {
    pub id: Uuid,
    pub created_at: OffsetDateTime,
    pub last_used_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The user's live sessions, newest first.
pub async fn live_sessions(
    db: &impl GenericClient,
    user_id: Uuid,
    now: OffsetDateTime,
    idle_limit: time::Duration,
) -> Result<Vec<SessionRow>, Error> {
    let idle_since = now - idle_limit;
    let rows = db
        .query(
            "SELECT id, created_at, last_used_at, expires_at, ip, user_agent FROM sessions \
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND last_used_at > $3 \
             ORDER BY created_at DESC, id DESC",
            &[&user_id, &now, &idle_since],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(SessionRow {
                id: row.try_get(0)?,
                created_at: row.try_get(1)?,
                last_used_at: row.try_get(2)?,
                expires_at: row.try_get(3)?,
                ip: row.try_get(4)?,
                user_agent: row.try_get(5)?,
            })
        })
        .collect()
}

/// Revokes one of the user's live sessions; false when it is not theirs or not live.
pub async fn revoke_user_session(
    db: &impl GenericClient,
    user_id: Uuid,
    session_id: Uuid,
    now: OffsetDateTime,
) -> Result<bool, Error> {
    let changed = db
        .execute(
            "UPDATE sessions SET revoked_at = $3 WHERE id = $2 AND user_id = $1 AND revoked_at IS NULL \
             AND expires_at > $3",
            &[&user_id, &session_id, &now],
        )
        .await?;
    Ok(changed > 0)
}

/// Revokes every live session of the user but `keep`; returns how many ended.
pub async fn revoke_other_sessions(
    db: &impl GenericClient,
    user_id: Uuid,
    keep: Uuid,
    now: OffsetDateTime,
) -> Result<u64, Error> {
    Ok(db
        .execute(
            "UPDATE sessions SET revoked_at = $3 WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL",
            &[&user_id, &keep, &now],
        )
        .await?)
}

pub async fn delete_user(db: &impl GenericClient, user_id: Uuid) -> Result<(), Error> {
    db.execute("DELETE FROM users WHERE id = $1", &[&user_id])
        .await?;
    Ok(())
}

pub async fn set_password_hash(
    db: &impl GenericClient,
    user_id: Uuid,
    hash: &str,
) -> Result<(), Error> {
    db.execute(
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        &[&user_id, &hash],
    )
    .await?;
    Ok(())
}

/// One more login attempt for an email, charged before the password is checked so that
/// concurrent attempts cannot all slip through one back-off window. Returns `Ok(None)` when the
/// attempt may proceed, or the seconds to wait when it falls inside the back-off.
pub async fn charge_login_attempt(
    db: &impl GenericClient,
    email_hash: &[u8; 32],
    free_failures: i32,
    now: OffsetDateTime,
) -> Result<Option<u64>, Error> {
    // Back-off after n >= free consecutive failures: 2^(n - free) seconds, capped at 900.
    let charged = db
        .query_opt(
            "INSERT INTO login_failures AS f (email_hash, failures, last_attempt_at) VALUES ($1, 1, $3) \
             ON CONFLICT (email_hash) DO UPDATE SET failures = f.failures + 1, last_attempt_at = $3 \
             WHERE f.failures < $2 OR $3 >= f.last_attempt_at \
                 + make_interval(secs => least(900, power(2, least(f.failures - $2, 12)))) \
             RETURNING failures",
            &[&email_hash.as_slice(), &free_failures, &now],
        )
        .await?;
    if charged.is_some() {
        return Ok(None);
    }
    let row = db
        .query_one(
            "SELECT ceil(extract(epoch FROM last_attempt_at \
                 + make_interval(secs => least(900, power(2, least(failures - $2, 12)))) - $3))::int8 \
             FROM login_failures WHERE email_hash = $1",
            &[&email_hash.as_slice(), &free_failures, &now],
        )
        .await?;
    let wait: i64 = row.try_get(0)?;
    Ok(Some(u64::try_from(wait).unwrap_or(1).max(1)))
}

/// A successful login ends the run of failures.
pub async fn clear_login_failures(
    db: &impl GenericClient,
    email_hash: &[u8; 32],
) -> Result<(), Error> {
    db.execute(
        "DELETE FROM login_failures WHERE email_hash = $1",
        &[&email_hash.as_slice()],
    )
    .await?;
    Ok(())
}

/// Counts one request against `bucket`, allowing `limit` per `period` (GCRA). Returns `Ok(None)`
/// when allowed, or the seconds until the next request would be.
pub async fn take_rate_limit(
    db: &impl GenericClient,
    bucket: &str,
    limit: u32,
    period: time::Duration,
    now: OffsetDateTime,
) -> Result<Option<u64>, Error> {
    let emission = period / limit.max(1);
    let allowed = db
        .query_opt(
            "INSERT INTO rate_limits AS r (bucket, tat) VALUES ($1, $2::timestamptz + make_interval(secs => $3)) \
             ON CONFLICT (bucket) DO UPDATE SET tat = greatest(r.tat, $2::timestamptz) + make_interval(secs => $3) \
             WHERE greatest(r.tat, $2::timestamptz) + make_interval(secs => $3) - $2::timestamptz <= make_interval(secs => $4) \
             RETURNING tat",
            &[&bucket, &now, &to_interval(emission), &to_interval(period)],
        )
        .await?;
    if allowed.is_some() {
        return Ok(None);
    }
    let row = db
        .query_one(
            "SELECT ceil(extract(epoch FROM tat + make_interval(secs => $3::float8 - $4::float8) - $2))::int8 \
             FROM rate_limits WHERE bucket = $1",
            &[&bucket, &now, &to_interval(emission), &to_interval(period)],
        )
        .await?;
    let wait: i64 = row.try_get(0)?;
    Ok(Some(u64::try_from(wait).unwrap_or(1).max(1)))
}

/// Rows deleted per table per pass: small enough that a pass never holds locks for long, while
/// passes come often enough (a share of logins and registrations) to keep up with any backlog.
const PRUNE_BATCH: i64 = 5000;

/// Deletes what no longer matters: spent rate-limit counters, old runs of login failures, and
/// sessions that are over (past their absolute end, idle too long, or revoked a day ago, so that
/// a late reuse of their refresh token is still recognised for a while). Called now and then by
/// the requests themselves, so no separate job is needed.
pub async fn prune_expired(
    db: &impl GenericClient,
    now: OffsetDateTime,
    idle_limit: time::Duration,
) -> Result<(), Error> {
    db.execute(
        "DELETE FROM rate_limits WHERE bucket IN (SELECT bucket FROM rate_limits WHERE tat < $1 LIMIT $2)",
        &[&now, &PRUNE_BATCH],
    )
    .await?;
    // A run of failures older than a day no longer slows anyone down.
    db.execute(
        "DELETE FROM login_failures WHERE email_hash IN \
         (SELECT email_hash FROM login_failures WHERE last_attempt_at < $1 LIMIT $2)",
        &[&(now - time::Duration::DAY), &PRUNE_BATCH],
    )
    .await?;
    let a_day_ago = now - time::Duration::DAY;
    db.execute(
        "DELETE FROM sessions WHERE id IN ( \
             (SELECT id FROM sessions WHERE expires_at < $1 LIMIT $3) \
             UNION (SELECT id FROM sessions WHERE last_used_at < $2 LIMIT $3) \
             UNION (SELECT id FROM sessions WHERE revoked_at < $4 LIMIT $3))",
        &[&now, &(now - idle_limit), &PRUNE_BATCH, &a_day_ago],
    )
    .await?;
    Ok(())
}

/// Durations travel as seconds for `make_interval`: tokio-postgres has no `interval` mapping.
fn to_interval(duration: time::Duration) -> f64 {
    duration.as_seconds_f64()
}
