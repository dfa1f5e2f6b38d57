//! The counters behind the login back-off and the per-IP limits, and the pruning that keeps
//! every table bounded without a separate job.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use super::to_interval;
use crate::error::Error;

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
