//! Verification and reset links, the verified flag, and the mail outbox.

use super::cached;
use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use uuid::Uuid;

use super::to_interval;
use crate::error::Error;

/// What a mailed link is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkPurpose {
    Verify,
    Reset,
}

impl LinkPurpose {
    fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Verify => "verify",
            LinkPurpose::Reset => "reset",
        }
    }
}

/// Stores a link's token hash for `user_id`, bound to `email`.
pub async fn insert_email_token(
    db: &impl GenericClient,
    token_hash: &[u8; 32],
    purpose: LinkPurpose,
    user_id: Uuid,
    email: &str,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> Result<(), Error> {
    cached::execute(
        db,
        "INSERT INTO email_tokens (token_hash, purpose, user_id, email, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &token_hash.as_slice(),
            &purpose.as_str(),
            &user_id,
            &email,
            &now,
            &expires_at,
        ],
    )
    .await?;
    Ok(())
}

/// Deletes the user's links for `purpose`: a newer reset link, a password change or a use
/// makes the older ones worthless.
pub async fn delete_email_tokens(
    db: &impl GenericClient,
    user_id: Uuid,
    purpose: LinkPurpose,
) -> Result<(), Error> {
    cached::execute(
        db,
        "DELETE FROM email_tokens WHERE user_id = $1 AND purpose = $2",
        &[&user_id, &purpose.as_str()],
    )
    .await?;
    Ok(())
}

/// Takes a link: deletes it and returns its account, if it exists for `purpose`, has not
/// expired, and the account still has the address it was sent to. Deleting is the use, so of two
/// concurrent uses only one gets the account.
pub async fn take_email_token(
    db: &impl GenericClient,
    token_hash: &[u8; 32],
    purpose: LinkPurpose,
    now: OffsetDateTime,
) -> Result<Option<super::UserRow>, Error> {
    let row = cached::query_opt(
        db,
        concat!(
            "WITH taken AS (DELETE FROM email_tokens WHERE token_hash = $1 AND purpose = $2 \
                 RETURNING user_id, email, expires_at) SELECT ",
            user_columns!(),
            " FROM taken t JOIN users u ON u.id = t.user_id AND u.email = t.email \
                 WHERE t.expires_at > $3"
        ),
        &[&token_hash.as_slice(), &purpose.as_str(), &now],
    )
    .await?;
    row.as_ref()
        .map(|row| super::users::user_from(row, 0))
        .transpose()
}

/// Marks the address verified (once: a second verification keeps the first time); `true` when
/// this call did it.
pub async fn mark_email_verified(
    db: &impl GenericClient,
    user_id: Uuid,
    now: OffsetDateTime,
) -> Result<bool, Error> {
    let changed = cached::execute(
        db,
        "UPDATE users SET email_verified_at = $2 WHERE id = $1 AND email_verified_at IS NULL",
        &[&user_id, &now],
    )
    .await?;
    Ok(changed == 1)
}

/// Sets a new password hash whatever the old one was: a reset proves the mailbox, not the
/// password.
pub async fn reset_password_hash(
    db: &impl GenericClient,
    user_id: Uuid,
    new_hash: &str,
) -> Result<(), Error> {
    cached::execute(
        db,
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        &[&user_id, &new_hash],
    )
    .await?;
    Ok(())
}

/// Ends every live session of the user (a reset: whoever had the old password is out).
pub async fn revoke_all_sessions(
    db: &impl GenericClient,
    user_id: Uuid,
    now: OffsetDateTime,
) -> Result<u64, Error> {
    Ok(cached::execute(
        db,
        "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        &[&user_id, &now],
    )
    .await?)
}

/// A mail to write into the outbox.
pub struct NewMail<'a> {
    pub kind: &'a str,
    pub recipient: &'a str,
    /// The link's token as stored: sealed when `token_sealed`.
    pub link_token: Option<&'a [u8]>,
    pub token_sealed: bool,
}

/// Queues a mail, inside the caller's transaction; due at once.
pub async fn enqueue_mail(
    db: &impl GenericClient,
    id: Uuid,
    mail: &NewMail<'_>,
    now: OffsetDateTime,
) -> Result<(), Error> {
    cached::execute(db,
        "INSERT INTO outbox (id, kind, recipient, link_token, token_sealed, created_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
        &[
            &id,
            &mail.kind,
            &mail.recipient,
            &mail.link_token,
            &mail.token_sealed,
            &now,
        ],
    )
    .await?;
    Ok(())
}

/// A mail claimed for sending.
pub struct ClaimedMail {
    pub id: Uuid,
    pub kind: String,
    pub recipient: String,
    pub link_token: Option<Vec<u8>>,
    pub token_sealed: bool,
    /// Including this one.
    pub attempts: i32,
    pub created_at: OffsetDateTime,
}

/// Claims up to `limit` due mails for `claim_id`: no other claimant gets them until `lease` has
/// passed (SKIP LOCKED lets concurrent claimants take different rows instead of waiting).
pub async fn claim_due_mail(
    db: &impl GenericClient,
    claim_id: Uuid,
    now: OffsetDateTime,
    lease: time::Duration,
    limit: i64,
) -> Result<Vec<ClaimedMail>, Error> {
    let rows = cached::query(db,
            "UPDATE outbox o SET claim_id = $1, attempts = o.attempts + 1, \
                 next_attempt_at = $2::timestamptz + make_interval(secs => $3) \
             WHERE o.id IN (SELECT id FROM outbox WHERE sent_at IS NULL AND rejected_at IS NULL \
                 AND next_attempt_at <= $2 ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING o.id, o.kind, o.recipient, o.link_token, o.token_sealed, o.attempts, o.created_at",
            &[&claim_id, &now, &to_interval(lease), &limit],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(ClaimedMail {
                id: row.try_get(0)?,
                kind: row.try_get(1)?,
                recipient: row.try_get(2)?,
                link_token: row.try_get(3)?,
                token_sealed: row.try_get(4)?,
                attempts: row.try_get(5)?,
                created_at: row.try_get(6)?,
            })
        })
        .collect()
}

/// How a claimed mail's attempt ended.
pub enum MailOutcome {
    Sent,
    /// The server refused it for good (an unknown mailbox, say): no retry.
    Rejected,
    /// Try again at this time.
    RetryAt(OffsetDateTime),
}

/// Records the attempt, if the claim is still ours. A sent or rejected mail loses its token.
pub async fn finish_mail(
    db: &impl GenericClient,
    id: Uuid,
    claim_id: Uuid,
    outcome: &MailOutcome,
    now: OffsetDateTime,
) -> Result<(), Error> {
    match outcome {
        MailOutcome::Sent => {
            cached::execute(
                db,
                "UPDATE outbox SET sent_at = $3, link_token = NULL, claim_id = NULL \
                 WHERE id = $1 AND claim_id = $2",
                &[&id, &claim_id, &now],
            )
            .await?
        }
        MailOutcome::Rejected => {
            cached::execute(
                db,
                "UPDATE outbox SET rejected_at = $3, link_token = NULL, claim_id = NULL \
                 WHERE id = $1 AND claim_id = $2",
                &[&id, &claim_id, &now],
            )
            .await?
        }
        MailOutcome::RetryAt(at) => {
            cached::execute(
                db,
                "UPDATE outbox SET next_attempt_at = $3, claim_id = NULL \
                 WHERE id = $1 AND claim_id = $2",
                &[&id, &claim_id, at],
            )
            .await?
        }
    };
    Ok(())
}

/// How long a finished mail (sent, or refused for good) stays in the outbox, for an operator
/// asking whether it went out.
pub const FINISHED_MAIL_KEPT: time::Duration = time::Duration::DAY;

/// Deletes a batch of finished outbox rows (sent or refused for good) once [`FINISHED_MAIL_KEPT`]
/// has passed since they finished, and of expired links; returns how many of each went. A mail
/// not sent yet is never deleted, however old: an SMTP outage longer than a day delays it and
/// loses nothing. Such a row keeps its link's token only sealed (with a key-encryption key) and
/// loses it once sent.
pub async fn prune_mail(
    db: &impl GenericClient,
    now: OffsetDateTime,
    batch: i64,
) -> Result<[u64; 2], Error> {
    let finished_before = now - FINISHED_MAIL_KEPT;
    let mail = cached::execute(
        db,
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
             WHERE (sent_at IS NOT NULL OR rejected_at IS NOT NULL) \
             AND coalesce(sent_at, rejected_at) < $1 LIMIT $2)",
        &[&finished_before, &batch],
    )
    .await?;
    let links = cached::execute(
        db,
        "DELETE FROM email_tokens WHERE token_hash IN \
         (SELECT token_hash FROM email_tokens WHERE expires_at < $1 LIMIT $2)",
        &[&now, &batch],
    )
    .await?;
    Ok([mail, links])
}

/// The account a link would take, without using it: the email (for the password policy) before
/// the slow hash; [`take_email_token`] then uses it for real.
pub async fn peek_email_token(
    db: &impl GenericClient,
    token_hash: &[u8; 32],
    purpose: LinkPurpose,
    now: OffsetDateTime,
) -> Result<Option<super::UserRow>, Error> {
    let row = cached::query_opt(
        db,
        concat!(
            "SELECT ",
            user_columns!(),
            " FROM email_tokens t JOIN users u ON u.id = t.user_id AND u.email = t.email \
                 WHERE t.token_hash = $1 AND t.purpose = $2 AND t.expires_at > $3"
        ),
        &[&token_hash.as_slice(), &purpose.as_str(), &now],
    )
    .await?;
    row.as_ref()
        .map(|row| super::users::user_from(row, 0))
        .transpose()
}
