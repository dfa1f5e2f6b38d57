//! Sessions and their refresh tokens.

use super::cached;
use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use uuid::Uuid;

use super::users::{UserRow, user_from};
use crate::error::Error;

pub struct NewSession<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub now: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// Stores a new session with its first refresh token (only the token's hash), in one statement.
pub async fn start_session(
    db: &impl GenericClient,
    session: &NewSession<'_>,
    refresh_token_hash: &[u8; 32],
) -> Result<(), Error> {
    cached::execute(
        db,
        "WITH started AS ( \
             INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, ip, user_agent) \
             VALUES ($1, $2, $3, $3, $4, $5, $6)) \
         INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($7, $1, $3)",
        &[
            &session.id,
            &session.user_id,
            &session.now,
            &session.expires_at,
            &session.ip,
            &session.user_agent,
            &refresh_token_hash.as_slice(),
        ],
    )
    .await?;
    Ok(())
}

async fn insert_refresh_token(
    db: &impl GenericClient,
    token_hash: &[u8; 32],
    session_id: Uuid,
    now: OffsetDateTime,
) -> Result<(), Error> {
    cached::execute(
        db,
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        &[&token_hash.as_slice(), &session_id, &now],
    )
    .await?;
    Ok(())
}

/// Used refresh tokens each session keeps for reuse detection.
const USED_TOKENS_KEPT: i64 = 16;

/// A session that a refresh may continue, with its account.
pub struct RotatedSession {
    pub session_id: Uuid,
    pub expires_at: OffsetDateTime,
    pub user: UserRow,
}

/// What presenting a refresh token did.
pub enum Rotation {
    /// The token was current: it is now used, its successor stored, the session touched.
    Rotated(RotatedSession),
    /// The token was used within the grace window: the successor stored then still stands.
    Repeated(RotatedSession),
    /// The token was used before the grace window: the whole session is now revoked.
    Reused { session_id: Uuid, user_id: Uuid },
    /// An unknown token, or one whose session is over.
    Refused(&'static str),
}

/// Rotates a refresh token inside the caller's transaction. The token's row and its session's
/// row stay locked until the transaction ends, so concurrent refreshes of one token queue here:
/// exactly one rotates and the others see its result.
pub async fn rotate_refresh_token(
    db: &impl GenericClient,
    presented_hash: &[u8; 32],
    successor_hash: &[u8; 32],
    now: OffsetDateTime,
    idle_limit: time::Duration,
    reuse_grace: time::Duration,
) -> Result<Rotation, Error> {
    let row = db
        .query_opt(
            // The grace is measured on the database's clock, which used_at was stamped with:
            // instances whose clocks disagree still agree on what is a reuse.
            concat!(
                "SELECT rt.used_at IS NOT NULL, clock_timestamp() - rt.used_at <= make_interval(secs => $4), ",
                session_is_live!("$2", "$3"),
                " AS live, s.id, s.expires_at, ",
                user_columns!(),
                " FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id \
                 JOIN users u ON u.id = s.user_id \
                 WHERE rt.token_hash = $1 FOR UPDATE OF rt, s"
            ),
            &[
                &presented_hash.as_slice(),
                &now,
                &(now - idle_limit),
                &super::to_interval(reuse_grace),
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Rotation::Refused("unknown refresh token"));
    };
    let used: bool = row.try_get(0)?;
    let within_grace: Option<bool> = row.try_get(1)?;
    let live: bool = row.try_get(2)?;
    let session = RotatedSession {
        session_id: row.try_get(3)?,
        expires_at: row.try_get(4)?,
        user: user_from(&row, 5)?,
    };
    if !live {
        return Ok(Rotation::Refused("session ended"));
    }
    match (used, within_grace) {
        (false, _) => {
            cached::execute(
                db,
                "UPDATE refresh_tokens SET used_at = clock_timestamp() WHERE token_hash = $1",
                &[&presented_hash.as_slice()],
            )
            .await?;
            insert_refresh_token(db, successor_hash, session.session_id, now).await?;
            // A session keeps the last few used tokens, enough to recognise the reuse of a
            // stolen one (the thief or the owner presents an old token soon after the other
            // rotated), not one row per refresh for the session's whole life.
            cached::execute(
                db,
                "DELETE FROM refresh_tokens WHERE session_id = $1 AND used_at IS NOT NULL \
                 AND token_hash NOT IN (SELECT token_hash FROM refresh_tokens \
                     WHERE session_id = $1 AND used_at IS NOT NULL ORDER BY used_at DESC LIMIT $2)",
                &[&session.session_id, &USED_TOKENS_KEPT],
            )
            .await?;
            cached::execute(
                db,
                "UPDATE sessions SET last_used_at = $2 WHERE id = $1",
                &[&session.session_id, &now],
            )
            .await?;
            Ok(Rotation::Rotated(session))
        }
        (true, Some(true)) => Ok(Rotation::Repeated(session)),
        (true, _) => {
            revoke_session(db, session.session_id, now).await?;
            Ok(Rotation::Reused {
                session_id: session.session_id,
                user_id: session.user.id,
            })
        }
    }
}

pub async fn session_for_refresh_token(
    db: &impl GenericClient,
    token_hash: &[u8; 32],
) -> Result<Option<Uuid>, Error> {
    let row = cached::query_opt(
        db,
        "SELECT session_id FROM refresh_tokens WHERE token_hash = $1",
        &[&token_hash.as_slice()],
    )
    .await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

/// Ends a session; returns its user when a live one was ended.
pub async fn revoke_session(
    db: &impl GenericClient,
    session_id: Uuid,
    now: OffsetDateTime,
) -> Result<Option<Uuid>, Error> {
    let row = cached::query_opt(db,
            "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING user_id",
            &[&session_id, &now],
        )
        .await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

/// One access token's session check: its session and account, and the time it is asked at.
pub struct SessionCheck {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub now: OffsetDateTime,
    pub idle_limit: time::Duration,
}

/// The account behind each access token, while its session is alive: the session check of every
/// signed-in request (and `GET /me`'s read), for several requests in one round trip. Each check
/// keeps its own time. The statement is prepared once per connection.
pub async fn users_of_live_sessions(
    db: &impl GenericClient,
    checks: &[SessionCheck],
) -> Result<Vec<Option<UserRow>>, Error> {
    let statement = db
        .prepare_cached(concat!(
            "SELECT c.i, ",
            user_columns!(),
            " FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[]) \
             WITH ORDINALITY AS c(sid, uid, now, idle_since, i) \
             JOIN sessions s ON s.id = c.sid AND s.user_id = c.uid \
             JOIN users u ON u.id = s.user_id WHERE ",
            session_is_live!("c.now", "c.idle_since")
        ))
        .await?;
    let session_ids: Vec<Uuid> = checks.iter().map(|c| c.session_id).collect();
    let user_ids: Vec<Uuid> = checks.iter().map(|c| c.user_id).collect();
    let nows: Vec<OffsetDateTime> = checks.iter().map(|c| c.now).collect();
    let idle_since: Vec<OffsetDateTime> = checks.iter().map(|c| c.now - c.idle_limit).collect();
    let rows = db
        .query(&statement, &[&session_ids, &user_ids, &nows, &idle_since])
        .await?;
    let mut users: Vec<Option<UserRow>> = checks.iter().map(|_| None).collect();
    for row in &rows {
        let ordinal: i64 = row.try_get(0)?;
        let slot = usize::try_from(ordinal - 1)
            .ok()
            .and_then(|index| users.get_mut(index))
            .ok_or_else(|| Error::internal("session check", "row for no check"))?;
        *slot = Some(user_from(row, 1)?);
    }
    Ok(users)
}

#[derive(Clone, Debug)]
pub struct SessionRow {
    pub id: Uuid,
    pub created_at: OffsetDateTime,
    pub last_used_at: OffsetDateTime,
    /// The session's absolute end; the idle limit can end it sooner.
    pub expires_at: OffsetDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Ends the user's oldest live sessions beyond `keep`; returns how many ended.
pub async fn end_sessions_beyond(
    db: &impl GenericClient,
    user_id: Uuid,
    keep: i64,
    now: OffsetDateTime,
    idle_limit: time::Duration,
) -> Result<u64, Error> {
    Ok(cached::execute(
        db,
        concat!(
            "UPDATE sessions SET revoked_at = $2 WHERE id IN ( \
                     SELECT s.id FROM sessions s WHERE s.user_id = $1 AND ",
            session_is_live!("$2", "$3"),
            " ORDER BY s.created_at DESC, s.id DESC OFFSET $4)"
        ),
        &[&user_id, &now, &(now - idle_limit), &keep],
    )
    .await?)
}

/// The user's live sessions, newest first, at most `limit`.
pub async fn live_sessions(
    db: &impl GenericClient,
    user_id: Uuid,
    now: OffsetDateTime,
    idle_limit: time::Duration,
    limit: i64,
) -> Result<Vec<SessionRow>, Error> {
    let rows = cached::query(
        db,
        concat!(
            "SELECT s.id, s.created_at, s.last_used_at, s.expires_at, s.ip, s.user_agent \
                 FROM sessions s WHERE s.user_id = $1 AND ",
            session_is_live!("$2", "$3"),
            " ORDER BY s.created_at DESC, s.id DESC LIMIT $4"
        ),
        &[&user_id, &now, &(now - idle_limit), &limit],
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
    let changed = cached::execute(
        db,
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
    Ok(cached::execute(db,
            "UPDATE sessions SET revoked_at = $3 WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL",
            &[&user_id, &keep, &now],
        )
        .await?)
}
