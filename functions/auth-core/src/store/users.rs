//! Accounts.

use super::cached;
use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::error::Error;

pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub created_at: OffsetDateTime,
    /// When the address was verified; `None` while it is not.
    pub email_verified_at: Option<OffsetDateTime>,
}

/// Reads the columns of `user_columns!` starting at column `first`.
pub(super) fn user_from(row: &tokio_postgres::Row, first: usize) -> Result<UserRow, Error> {
    Ok(UserRow {
        id: row.try_get(first)?,
        email: row.try_get(first + 1)?,
        password_hash: row.try_get(first + 2)?,
        created_at: row.try_get(first + 3)?,
        email_verified_at: row.try_get(first + 4)?,
    })
}

pub async fn insert_user(db: &impl GenericClient, user: &UserRow) -> Result<(), Error> {
    let result = cached::execute(
        db,
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
    let row = cached::query_opt(
        db,
        concat!(
            "SELECT ",
            user_columns!(),
            " FROM users u WHERE u.email = $1"
        ),
        &[&email],
    )
    .await?;
    row.as_ref().map(|row| user_from(row, 0)).transpose()
}

pub async fn find_user(db: &impl GenericClient, id: Uuid) -> Result<Option<UserRow>, Error> {
    let row = cached::query_opt(
        db,
        concat!("SELECT ", user_columns!(), " FROM users u WHERE u.id = $1"),
        &[&id],
    )
    .await?;
    row.as_ref().map(|row| user_from(row, 0)).transpose()
}

/// Locks the user's row against a password change until the transaction ends, if `hash` is
/// still its password; `false` when the password has changed since it was read.
pub async fn lock_user_with_password(
    tx: &impl GenericClient,
    user_id: Uuid,
    hash: &str,
) -> Result<bool, Error> {
    let row = cached::query_opt(
        tx,
        "SELECT 1 FROM users WHERE id = $1 AND password_hash = $2 FOR SHARE",
        &[&user_id, &hash],
    )
    .await?;
    Ok(row.is_some())
}

/// Sets a new password hash if `old_hash` is still the account's, so that of two concurrent
/// changes only the first wins and a transparent re-hash never overwrites a change; `false` when
/// it is not.
pub async fn set_password_hash(
    db: &impl GenericClient,
    user_id: Uuid,
    old_hash: &str,
    new_hash: &str,
) -> Result<bool, Error> {
    let changed = cached::execute(
        db,
        "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
        &[&user_id, &old_hash, &new_hash],
    )
    .await?;
    Ok(changed == 1)
}

pub async fn delete_user(db: &impl GenericClient, user_id: Uuid) -> Result<(), Error> {
    cached::execute(db, "DELETE FROM users WHERE id = $1", &[&user_id]).await?;
    Ok(())
}

/// What an Idempotency-Key was first used for.
pub enum KeyClaim {
    /// The key is new: it now belongs to this request (with its transaction).
    Claimed,
    /// A committed request used it: the endpoint and the account it created.
    Used { endpoint: String, user_id: Uuid },
}

/// Claims an idempotency key for `user_id` inside the caller's transaction. A request holding
/// the same key in a transaction not yet committed makes this wait for its outcome. A row from
/// before `kept_since` no longer answers retries: it is taken over as if the key were new, so a
/// key's lifetime does not depend on when the table was last pruned.
pub async fn claim_idempotency_key(
    tx: &impl GenericClient,
    key_hash: &[u8; 32],
    endpoint: &str,
    user_id: Uuid,
    now: OffsetDateTime,
    kept_since: OffsetDateTime,
) -> Result<KeyClaim, Error> {
    let claimed = cached::execute(
        tx,
        "INSERT INTO idempotency_keys (key_hash, endpoint, user_id, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (key_hash) DO UPDATE \
             SET endpoint = EXCLUDED.endpoint, user_id = EXCLUDED.user_id, \
                 created_at = EXCLUDED.created_at \
             WHERE idempotency_keys.created_at < $5",
        &[&key_hash.as_slice(), &endpoint, &user_id, &now, &kept_since],
    )
    .await?;
    if claimed == 1 {
        return Ok(KeyClaim::Claimed);
    }
    // ON CONFLICT locked the row it did not update, so it is still there and still recent.
    let row = cached::query_one(
        tx,
        "SELECT endpoint, user_id FROM idempotency_keys WHERE key_hash = $1",
        &[&key_hash.as_slice()],
    )
    .await?;
    Ok(KeyClaim::Used {
        endpoint: row.try_get(0)?,
        user_id: row.try_get(1)?,
    })
}
