//! The counters behind the login back-off and the per-IP limits, and the pruning that keeps
//! every table bounded without a separate job.

use super::cached;
use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use super::to_interval;
use crate::error::Error;

/// The row of `password_failures` that counts an email's failures across every network.
const EVERY_NETWORK: &str = "*";

/// The seconds to wait before `email_hash` may have its password checked again from `network`,
/// or `None`. After `free` consecutive failures from one network (or `account_free` across all of
/// them) each further check waits 2^(n - free) seconds, at most 900, from the last failure.
pub async fn password_backoff(
    db: &impl GenericClient,
    email_hash: &[u8; 32],
    network: Option<&str>,
    free: i32,
    account_free: i32,
    now: OffsetDateTime,
) -> Result<Option<u64>, Error> {
    let row = cached::query_one(db,
            "SELECT max(ceil(extract(epoch FROM last_failure_at + make_interval(secs => \
                 least(900, power(2, least(failures - CASE WHEN network = $5::text THEN $4::int4 ELSE $3::int4 END, 12)))) \
                 - $6::timestamptz)))::int8 \
             FROM password_failures \
             WHERE email_hash = $1 \
               AND ((network = $5::text AND failures >= $4::int4) OR (network = $2::text AND failures >= $3::int4))",
            &[
                &email_hash.as_slice(),
                &network,
                &free,
                &account_free,
                &EVERY_NETWORK,
                &now,
            ],
        )
        .await?;
    let wait: Option<i64> = row.try_get(0)?;
    Ok(wait
        .filter(|secs| *secs > 0)
        .map(|secs| u64::try_from(secs).unwrap_or(1)))
}

/// One more failed password check for `email_hash`, from `network` and across every network.
/// Charged after the check, so that a refused attempt (overloaded, throttled) or a correct one
/// never counts, and correct logins in parallel never trip the back-off.
pub async fn record_password_failure(
    db: &impl GenericClient,
    email_hash: &[u8; 32],
    network: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), Error> {
    let networks: Vec<&str> = network.into_iter().chain([EVERY_NETWORK]).collect();
    cached::execute(
        db,
        "INSERT INTO password_failures AS f (email_hash, network, failures, last_failure_at) \
         SELECT $1, n, 1, $3 FROM unnest($2::text[]) AS n \
         ON CONFLICT (email_hash, network) DO UPDATE \
         SET failures = f.failures + 1, last_failure_at = greatest(f.last_failure_at, $3)",
        &[&email_hash.as_slice(), &networks, &now],
    )
    .await?;
    Ok(())
}

/// A correct password ends every run of failures for the email.
pub async fn clear_password_failures(
    db: &impl GenericClient,
    email_hash: &[u8; 32],
) -> Result<(), Error> {
    cached::execute(
        db,
        "DELETE FROM password_failures WHERE email_hash = $1",
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
    let allowed = cached::query_opt(db,
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
    let row = cached::query_one(db,
            "SELECT ceil(extract(epoch FROM tat + make_interval(secs => $3::float8 - $4::float8) - $2))::int8 \
             FROM rate_limits WHERE bucket = $1",
            &[&bucket, &now, &to_interval(emission), &to_interval(period)],
        )
        .await?;
    let wait: i64 = row.try_get(0)?;
    Ok(Some(u64::try_from(wait).unwrap_or(1).max(1)))
}

/// Rows deleted per table per batch: small enough that a batch never holds locks for long; a
/// pass repeats batches while any table filled one (see [`prune_expired`]).
const PRUNE_BATCH: i64 = 5000;

/// Statements that each delete one batch (at most `$2` rows) of a table's rows whose time is
/// before a cut-off (`$1`): now less how long the table keeps them.
const PRUNES_BY_AGE: [(time::Duration, &str); 4] = [
    // A rate-limit counter whose theoretical arrival time has passed holds nothing back.
    (
        time::Duration::ZERO,
        "DELETE FROM rate_limits WHERE bucket IN \
         (SELECT bucket FROM rate_limits WHERE tat < $1 LIMIT $2)",
    ),
    // A run of failures older than a day no longer slows anyone down.
    (
        time::Duration::DAY,
        "DELETE FROM password_failures WHERE (email_hash, network) IN \
         (SELECT email_hash, network FROM password_failures WHERE last_failure_at < $1 LIMIT $2)",
    ),
    // An idempotency key answers retries for a day (the claims ignore older rows already).
    (
        time::Duration::DAY,
        "DELETE FROM idempotency_keys WHERE key_hash IN \
         (SELECT key_hash FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
    ),
    (
        time::Duration::DAY,
        "DELETE FROM idempotent_requests WHERE key_hash IN \
         (SELECT key_hash FROM idempotent_requests WHERE created_at < $1 LIMIT $2)",
    ),
];

/// Deletes one batch of what no longer matters: spent rate-limit counters, old runs of login
/// failures, expired idempotency keys, sent mail and used links, and sessions that are over (past
/// their absolute end, idle too long, or revoked a day ago, so that a late reuse of their refresh
/// token is still recognised for a while). Returns whether a table filled its batch, so that more
/// may be left: the caller repeats until none does.
pub async fn prune_expired(
    db: &impl GenericClient,
    now: OffsetDateTime,
    idle_limit: time::Duration,
) -> Result<bool, Error> {
    let a_day_ago = now - time::Duration::DAY;
    let mut deleted = Vec::with_capacity(PRUNES_BY_AGE.len() + 3);
    for (kept, statement) in PRUNES_BY_AGE {
        deleted.push(cached::execute(db, statement, &[&(now - kept), &PRUNE_BATCH]).await?);
    }
    deleted.extend(super::prune_mail(db, now, PRUNE_BATCH).await?);
    deleted.push(
        cached::execute(
            db,
            "DELETE FROM sessions WHERE id IN ( \
                 (SELECT id FROM sessions WHERE expires_at < $1 LIMIT $3) \
                 UNION (SELECT id FROM sessions WHERE last_used_at < $2 LIMIT $3) \
                 UNION (SELECT id FROM sessions WHERE revoked_at < $4 LIMIT $3))",
            &[&now, &(now - idle_limit), &PRUNE_BATCH, &a_day_ago],
        )
        .await?,
    );
    Ok(deleted
        .iter()
        .any(|rows| *rows >= PRUNE_BATCH.unsigned_abs()))
}
