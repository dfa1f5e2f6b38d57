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

/// Ends a session; returns whether a live one was ended.
pub async fn revoke_session(
    db: &impl GenericClient,
    session_id: Uuid,
    now: OffsetDateTime,
) -> Result<bool, Error> {
    let changed = db
        .execute(
            "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&session_id, &now],
        )
        .await?;
    Ok(changed > 0)
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
