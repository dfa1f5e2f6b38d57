//! Email verification, password reset, and the outbox worker that sends their mail.
//!
//! Mail is written into the outbox in the transaction of what caused it and sent afterwards by
//! a worker in every instance, so a request never waits for the mail server and an outage only
//! delays mail. Workers claim due rows with `FOR UPDATE SKIP LOCKED` and a lease, so each mail is
//! sent by one instance; a failed attempt is retried with exponential back-off.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use super::idempotency::{claim_registration_key, record_request};
use super::{Auth, ClientInfo, KeyedRequest, record_event};
use crate::config::EmailVerification;
use crate::error::Error;
use crate::mail::{self, MailKind, Mailer, SendError};
use crate::password;
use crate::store::{self, LinkPurpose, MailOutcome, UserRow};
use crate::token;

/// The endpoints whose `Idempotency-Key`s are kept apart (part of each key's scope).
const VERIFY_ENDPOINT: &str = "POST /api/v1/auth/verify-email";
const RESEND_ENDPOINT: &str = "POST /api/v1/auth/verify-email/resend";
const RESET_ENDPOINT: &str = "POST /api/v1/auth/password-reset";
const CONFIRM_ENDPOINT: &str = "POST /api/v1/auth/password-reset/confirm";

/// How long a verification link works.
pub const VERIFY_LINK_TTL: time::Duration = time::Duration::hours(24);
/// How long a reset link works.
pub const RESET_LINK_TTL: time::Duration = time::Duration::minutes(30);
/// Per email (known or not, so that a 429 says nothing about the account) and per client
/// network, per hour: verification resends and reset requests each.
const MAIL_REQUESTS_PER_EMAIL_PER_HOUR: u32 = 5;
const MAIL_REQUESTS_PER_NETWORK_PER_HOUR: u32 = 30;

/// A claimant keeps its mails this long; one that dies leaves them due again after it.
const MAIL_LEASE: time::Duration = time::Duration::minutes(5);
/// Mails claimed at once: at most this many sends (20 s each at worst) must fit in the lease.
const MAIL_BATCH: i64 = 10;
/// How often an idle worker looks for mail queued by other instances and for retries.
const MAIL_POLL: Duration = Duration::from_secs(1);
/// The longest wait between two attempts at one mail.
const MAIL_MAX_BACKOFF_SECS: i64 = 300;

/// The wait before attempt `attempts + 1`: 1 s, 2 s, 4 s, ... up to five minutes.
fn retry_delay(attempts: i32) -> time::Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    time::Duration::seconds((1i64 << exponent).min(MAIL_MAX_BACKOFF_SECS))
}

/// What the outbox worker needs, shared with the [`Auth`] that wakes it.
pub(super) struct Outbox {
    pool: Pool,
    mailer: Mailer,
    kek: Option<[u8; 32]>,
    public_url: String,
    wake: Notify,
}

impl Outbox {
    pub(super) fn new(
        pool: Pool,
        mailer: Mailer,
        kek: Option<[u8; 32]>,
        public_url: String,
    ) -> Self {
        Outbox {
            pool,
            mailer,
            kek,
            public_url,
            wake: Notify::new(),
        }
    }

    /// Sends what is due until none is, then waits for a wake-up or the next poll.
    pub(super) async fn run(self: Arc<Self>) {
        loop {
            match self.deliver_due(OffsetDateTime::now_utc()).await {
                // A full batch: more may be due at once.
                Ok(claimed) if i64::try_from(claimed).unwrap_or(i64::MAX) >= MAIL_BATCH => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = %crate::error::cause_chain(&error), "mail delivery postponed");
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(MAIL_POLL) => {}
            }
        }
    }

    /// Claims the mails due at `now` and tries each once; returns how many it claimed.
    pub(super) async fn deliver_due(&self, now: OffsetDateTime) -> Result<usize, Error> {
        let claim_id = Uuid::now_v7();
        // The connection goes back to the pool before any mail server is contacted.
        let claimed = store::claim_due_mail(
            &self.pool.get().await?,
            claim_id,
            now,
            MAIL_LEASE,
            MAIL_BATCH,
        )
        .await?;
        let count = claimed.len();
        for mail in claimed {
            let outcome = match self.send(&mail).await {
                Ok(()) => MailOutcome::Sent,
                Err(SendError::Permanent(reason)) => {
                    tracing::error!(mail_id = %mail.id, kind = %mail.kind, %reason, "mail refused for good; not retried");
                    MailOutcome::Rejected
                }
                Err(SendError::Transient(reason)) => {
                    let delay = retry_delay(mail.attempts);
                    tracing::warn!(mail_id = %mail.id, kind = %mail.kind, attempts = mail.attempts, retry_in_secs = delay.whole_seconds(), %reason, "mail not sent; will retry");
                    MailOutcome::RetryAt(OffsetDateTime::now_utc() + delay)
                }
            };
            store::finish_mail(
                &self.pool.get().await?,
                mail.id,
                claim_id,
                &outcome,
                OffsetDateTime::now_utc(),
            )
            .await?;
        }
        Ok(count)
    }

    async fn send(&self, mail: &store::ClaimedMail) -> Result<(), SendError> {
        let kind = MailKind::parse(&mail.kind)
            .ok_or_else(|| SendError::Permanent(format!("unknown mail kind {}", mail.kind)))?;
        let token = match &mail.link_token {
            None => None,
            Some(stored) => {
                let opened = crate::seal::unprotect(
                    self.kek.as_ref(),
                    &mail.id.to_string(),
                    stored.clone(),
                    mail.token_sealed,
                )
                .and_then(|bytes| {
                    String::from_utf8(bytes)
                        .map_err(|e| Error::internal("reading a mail's token", e))
                });
                // A token that cannot be opened (AUTH_KEY_ENCRYPTION_KEY changed) never will be.
                Some(opened.map_err(|e| SendError::Permanent(crate::error::cause_chain(&e)))?)
            }
        };
        let rendered = mail::render(kind, &self.public_url, token.as_deref())
            .map_err(|e| SendError::Permanent(crate::error::cause_chain(&e)))?;
        self.mailer.send(&mail.recipient, &rendered).await
    }

    /// Lets this instance's worker start on mail just committed instead of at its next poll.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Writes a mail into the outbox inside the caller's transaction; the link's token, if
    /// any, sealed under the key-encryption key when one is set (bound to the row's id).
    pub(super) async fn queue(
        &self,
        tx: &impl GenericClient,
        kind: MailKind,
        recipient: &str,
        token: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let id = Uuid::now_v7();
        let stored = token
            .map(|token| crate::seal::protect(self.kek.as_ref(), &id.to_string(), token.as_bytes()))
            .transpose()?;
        let mail = store::NewMail {
            kind: kind.as_str(),
            recipient,
            link_token: stored.as_ref().map(|(bytes, _)| bytes.as_slice()),
            token_sealed: stored.as_ref().is_some_and(|(_, sealed)| *sealed),
        };
        store::enqueue_mail(tx, id, &mail, now).await
    }
}

impl Auth {
    /// Sends the mail due now from this instance and returns how many it tried. The worker
    /// does this on its own; a Lambda copy, frozen between invocations, may call it to drain.
    pub async fn deliver_mail(&self) -> Result<usize, Error> {
        self.outbox.deliver_due(OffsetDateTime::now_utc()).await
    }

    /// Issues a link for `user` and queues its mail, inside the caller's transaction.
    async fn queue_link(
        &self,
        tx: &impl GenericClient,
        user: &UserRow,
        purpose: LinkPurpose,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let (kind, ttl) = match purpose {
            LinkPurpose::Verify => (MailKind::VerifyEmail, VERIFY_LINK_TTL),
            LinkPurpose::Reset => (MailKind::PasswordReset, RESET_LINK_TTL),
        };
        let link_token = token::new_refresh_token()?;
        store::insert_email_token(
            tx,
            &token::sha256(link_token.as_bytes()),
            purpose,
            user.id,
            &user.email,
            now,
            now + ttl,
        )
        .await?;
        self.outbox
            .queue(tx, kind, &user.email, Some(&link_token), now)
            .await
    }

    /// The verification mail of a registration, in its transaction, when verification is on.
    pub(super) async fn queue_verification(
        &self,
        tx: &impl GenericClient,
        user: &UserRow,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        if self.config.email_verification == EmailVerification::Off {
            return Ok(());
        }
        self.queue_link(tx, user, LinkPurpose::Verify, now).await
    }

    pub(super) fn wake_mail_worker(&self) {
        self.outbox.wake();
    }

    /// Registration when verification is `required`: the account is created unverified and
    /// mailed a link; for an address that already has an account, its owner is mailed a notice
    /// instead. Both cost the same hash and answer the same, so the answer tells nothing.
    pub async fn register_unverified(
        &self,
        raw_email: &str,
        raw_password: &str,
        idempotency_key: Option<&str>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let user = self.new_user(raw_email, raw_password, client, now).await?;
        let created = {
            let mut db = self.pool.get().await?;
            let tx = db.transaction().await?;
            if let Some(key) = idempotency_key {
                // A retry of a registration that committed: it was answered, and mailed, once.
                if let store::KeyClaim::Used { .. } =
                    claim_registration_key(&tx, key, user.id, now).await?
                {
                    return Ok(());
                }
            }
            if store::find_user_by_email(&tx, &user.email).await?.is_some() {
                false
            } else {
                match store::insert_user(&tx, &user).await {
                    Ok(()) => {
                        record_event(&tx, user.id, store::EventType::Registered, client, now)
                            .await?;
                        self.queue_link(&tx, &user, LinkPurpose::Verify, now)
                            .await?;
                        tx.commit().await?;
                        true
                    }
                    // Registered concurrently since the look-up: the same as taken.
                    Err(Error::EmailTaken) => false,
                    Err(other) => return Err(other),
                }
            }
        };
        if !created {
            // The transaction above (and any key it claimed) is rolled back: nothing was made.
            let mut db = self.pool.get().await?;
            let tx = db.transaction().await?;
            self.outbox
                .queue(&tx, MailKind::SignupAttempt, &user.email, None, now)
                .await?;
            tx.commit().await?;
        }
        self.wake_mail_worker();
        Ok(())
    }

    /// `POST /auth/verify-email`: uses a verification link. With an `Idempotency-Key`, a retry
    /// after the link was used by the first try gets the first answer (204), not `invalid_link`.
    pub async fn verify_email(
        &self,
        link_token: &str,
        idempotency_key: Option<&str>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        if !token::looks_like_refresh_token(link_token) {
            return Err(Error::InvalidLink);
        }
        let keyed = Self::keyed_by_link(VERIFY_ENDPOINT, idempotency_key, link_token, &[])?;
        if self.answered_before(keyed.as_ref(), now).await? {
            return Ok(());
        }
        let outcome = self.take_verification(link_token, keyed, client, now).await;
        self.unless_answered(keyed, now, outcome).await
    }

    async fn take_verification(
        &self,
        link_token: &str,
        keyed: Option<KeyedRequest>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        if record_request(&tx, keyed, now).await? {
            return Ok(());
        }
        let user = store::take_email_token(
            &tx,
            &token::sha256(link_token.as_bytes()),
            LinkPurpose::Verify,
            now,
        )
        .await?
        .ok_or(Error::InvalidLink)?;
        if store::mark_email_verified(&tx, user.id, now).await? {
            record_event(&tx, user.id, store::EventType::EmailVerified, client, now).await?;
        }
        store::delete_email_tokens(&tx, user.id, LinkPurpose::Verify).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts a mail request against the email's and the network's hourly budgets.
    async fn limit_mail_requests(
        &self,
        action: &str,
        email: &str,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        self.limit_per_network(
            action,
            client,
            MAIL_REQUESTS_PER_NETWORK_PER_HOUR,
            time::Duration::HOUR,
            now,
        )
        .await?;
        // Keyed by a hash of the address, known or not: the bucket holds no address, and an
        // unknown one runs out exactly as a known one does.
        let email_hash = token::sha256(email.as_bytes());
        self.take_limit(
            &format!("{action}:email:{}", hex(&email_hash)),
            MAIL_REQUESTS_PER_EMAIL_PER_HOUR,
            time::Duration::HOUR,
            now,
        )
        .await
    }

    /// `POST /auth/verify-email/resend`: a new link for an unverified account; nothing for an
    /// unknown or verified one, with the same answer. With an `Idempotency-Key`, a retry gets
    /// the first answer without another mail or counting against the limits again.
    pub async fn resend_verification(
        &self,
        raw_email: &str,
        idempotency_key: Option<&str>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let email = password::normalise_email(raw_email).unwrap_or_default();
        let keyed = self.keyed_by_address(RESEND_ENDPOINT, idempotency_key, &email)?;
        if self.answered_before(keyed.as_ref(), now).await? {
            return Ok(());
        }
        self.limit_mail_requests("verify_resend", &email, client, now)
            .await?;
        let outcome = self.queue_resend(&email, keyed, now).await;
        self.unless_answered(keyed, now, outcome).await
    }

    async fn queue_resend(
        &self,
        email: &str,
        keyed: Option<KeyedRequest>,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        if keyed.is_none()
            && (email.is_empty() || self.config.email_verification == EmailVerification::Off)
        {
            return Ok(());
        }
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        // The key commits whatever the address turns out to be, so that a retry is answered alike.
        if record_request(&tx, keyed, now).await? {
            return Ok(());
        }
        let user = if email.is_empty() || self.config.email_verification == EmailVerification::Off {
            None
        } else {
            store::find_user_by_email(&tx, email).await?
        };
        let unverified = user.filter(|user| user.email_verified_at.is_none());
        if let Some(user) = &unverified {
            self.queue_link(&tx, user, LinkPurpose::Verify, now).await?;
        }
        tx.commit().await?;
        if unverified.is_some() {
            self.wake_mail_worker();
        }
        Ok(())
    }

    /// `POST /auth/password-reset`: mails a reset link when the account exists (older links
    /// die); the same answer otherwise. With an `Idempotency-Key`, a retry gets the first answer
    /// without a newer link (which would kill the one already mailed) or counting the limits.
    pub async fn request_password_reset(
        &self,
        raw_email: &str,
        idempotency_key: Option<&str>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let email = password::normalise_email(raw_email).unwrap_or_default();
        let keyed = self.keyed_by_address(RESET_ENDPOINT, idempotency_key, &email)?;
        if self.answered_before(keyed.as_ref(), now).await? {
            return Ok(());
        }
        self.limit_mail_requests("password_reset", &email, client, now)
            .await?;
        let outcome = self.queue_reset(&email, keyed, client, now).await;
        self.unless_answered(keyed, now, outcome).await
    }

    async fn queue_reset(
        &self,
        email: &str,
        keyed: Option<KeyedRequest>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        if email.is_empty() && keyed.is_none() {
            return Ok(());
        }
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        // The key commits whatever the address turns out to be, so that a retry is answered alike.
        if record_request(&tx, keyed, now).await? {
            return Ok(());
        }
        let user = if email.is_empty() {
            None
        } else {
            store::find_user_by_email(&tx, email).await?
        };
        let Some(user) = user else {
            tx.commit().await?;
            return Ok(());
        };
        store::delete_email_tokens(&tx, user.id, LinkPurpose::Reset).await?;
        self.queue_link(&tx, &user, LinkPurpose::Reset, now).await?;
        record_event(
            &tx,
            user.id,
            store::EventType::PasswordResetRequested,
            client,
            now,
        )
        .await?;
        tx.commit().await?;
        self.wake_mail_worker();
        Ok(())
    }

    /// `POST /auth/password-reset/confirm`: sets the password a reset link allows; every
    /// session ends, the owner is told by mail. The link is used only by a password that passes
    /// the policy, so a 422 leaves it working.
    ///
    /// With an `Idempotency-Key`, a retry of the same confirmation (the same link and password)
    /// after the first used the link gets the first answer (204), not `invalid_link`.
    pub async fn confirm_password_reset(
        &self,
        link_token: &str,
        new_password: &str,
        idempotency_key: Option<&str>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        if !token::looks_like_refresh_token(link_token) {
            return Err(Error::InvalidLink);
        }
        let keyed = Self::keyed_by_link(
            CONFIRM_ENDPOINT,
            idempotency_key,
            link_token,
            &[new_password.as_bytes()],
        )?;
        if self.answered_before(keyed.as_ref(), now).await? {
            return Ok(());
        }
        let outcome = self
            .reset_with_link(link_token, new_password, keyed, client, now)
            .await;
        self.unless_answered(keyed, now, outcome).await
    }

    async fn reset_with_link(
        &self,
        link_token: &str,
        new_password: &str,
        keyed: Option<KeyedRequest>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let token_hash = token::sha256(link_token.as_bytes());
        let user = store::peek_email_token(
            &self.pool.get().await?,
            &token_hash,
            LinkPurpose::Reset,
            now,
        )
        .await?
        .ok_or(Error::InvalidLink)?;
        let new_hash = self.new_password_hash(&user.email, new_password).await?;
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        if record_request(&tx, keyed, now).await? {
            return Ok(());
        }
        // Taken for real now: a concurrent confirm, a newer link or a password change since the
        // look-up leaves nothing to take.
        let user = store::take_email_token(&tx, &token_hash, LinkPurpose::Reset, now)
            .await?
            .ok_or(Error::InvalidLink)?;
        store::reset_password_hash(&tx, user.id, &new_hash).await?;
        store::delete_email_tokens(&tx, user.id, LinkPurpose::Reset).await?;
        store::revoke_all_sessions(&tx, user.id, now).await?;
        // The link proved the mailbox, and the new password ends any run of failures.
        store::mark_email_verified(&tx, user.id, now).await?;
        store::clear_password_failures(&tx, &token::sha256(user.email.as_bytes())).await?;
        record_event(&tx, user.id, store::EventType::PasswordReset, client, now).await?;
        self.outbox
            .queue(&tx, MailKind::PasswordResetDone, &user.email, None, now)
            .await?;
        tx.commit().await?;
        self.wake_mail_worker();
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        let delays: Vec<i64> = [1, 2, 3, 9, 10, 40]
            .into_iter()
            .map(|attempts| retry_delay(attempts).whole_seconds())
            .collect();
        assert_eq!(delays, [1, 2, 4, 256, 300, 300]);
    }
}
