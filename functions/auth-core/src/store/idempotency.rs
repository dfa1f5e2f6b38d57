//! Requests made with an `Idempotency-Key` (login and what a signed-in session changes).

use super::cached;
use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Error;

/// A request an earlier one with the same key already answered.
pub struct KeptRequest {
    pub fingerprint: Vec<u8>,
    /// A login's: the session it started.
    pub session_id: Option<Uuid>,
}

/// The outcome of recording a key inside the request's own transaction.
pub enum RequestClaim {
    /// The key is new (or its earlier use has expired): it commits with this request's effect.
    Claimed,
    /// A committed request used it first.
    Kept(KeptRequest),
}

/// Records `key_hash` for this request inside the caller's transaction. A request holding the
/// same key in a transaction not yet committed makes this wait for its outcome, so of two
/// concurrent duplicates one does the work and the other finds its row. A row from before
/// `kept_since` is taken over as if it were new.
pub async fn claim_request(
    tx: &impl GenericClient,
    key_hash: &[u8; 32],
    fingerprint: &[u8; 32],
    session_id: Option<Uuid>,
    now: OffsetDateTime,
    kept_since: OffsetDateTime,
) -> Result<RequestClaim, Error> {
    let claimed = cached::execute(
        tx,
        "INSERT INTO idempotent_requests (key_hash, fingerprint, session_id, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (key_hash) DO UPDATE \
             SET fingerprint = EXCLUDED.fingerprint, session_id = EXCLUDED.session_id, \
                 created_at = EXCLUDED.created_at \
             WHERE idempotent_requests.created_at < $5",
        &[
            &key_hash.as_slice(),
            &fingerprint.as_slice(),
            &session_id,
            &now,
            &kept_since,
        ],
    )
    .await?;
    if claimed == 1 {
        return Ok(RequestClaim::Claimed);
    }
    // ON CONFLICT locked the row it did not update, so it cannot vanish before this read.
    let kept = find_request(tx, key_hash, kept_since)
        .await?
        .ok_or_else(|| Error::internal("idempotency key", "the conflicting row is gone"))?;
    Ok(RequestClaim::Kept(kept))
}

/// The committed request that used `key_hash` since `kept_since`, if any.
pub async fn find_request(
    db: &impl GenericClient,
    key_hash: &[u8; 32],
    kept_since: OffsetDateTime,
) -> Result<Option<KeptRequest>, Error> {
    let row = cached::query_opt(
        db,
        "SELECT fingerprint, session_id FROM idempotent_requests \
             WHERE key_hash = $1 AND created_at >= $2",
        &[&key_hash.as_slice(), &kept_since],
    )
    .await?;
    row.map(|row| {
        Ok(KeptRequest {
            fingerprint: row.try_get(0)?,
            session_id: row.try_get(1)?,
        })
    })
    .transpose()
}

/// Whether `token_hash` is the live session's first refresh token, still unused: a login's
/// replay may hand it out again only then.
pub async fn first_token_unused(
    db: &impl GenericClient,
    session_id: Uuid,
    token_hash: &[u8; 32],
    now: OffsetDateTime,
    idle_limit: time::Duration,
) -> Result<Option<OffsetDateTime>, Error> {
    let row = cached::query_opt(
        db,
        concat!(
            "SELECT s.expires_at FROM sessions s \
                 JOIN refresh_tokens t ON t.session_id = s.id \
                 WHERE s.id = $1 AND t.token_hash = $2 AND t.used_at IS NULL AND ",
            session_is_live!("$3", "$4")
        ),
        &[
            &session_id,
            &token_hash.as_slice(),
            &now,
            &(now - idle_limit),
        ],
    )
    .await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}
