//! The signed-in account: who it is, its history, changing its password, deleting it.

use time::OffsetDateTime;

use super::idempotency::{KeyedRequest, record_request};
use super::limits::PasswordCheck;
use super::{Account, Auth, ClientInfo, SecurityEvent, record_event};
use crate::error::Error;
use crate::password;
use crate::store::{self, UserRow};
use crate::token::TokenSubject;

/// Events shown to the account's owner.
const EVENTS_SHOWN: i64 = 50;

impl Auth {
    /// `GET /me`: the token's signature, then its session and account in one statement.
    pub async fn me(&self, bearer: &str, now: OffsetDateTime) -> Result<Account, Error> {
        let subject = self.verify_signature(bearer, now).await?;
        self.user_of_live_session(subject, now)
            .await?
            .map(|user| self.shown(user.into()))
            .ok_or_else(|| Error::token("session ended"))
    }

    async fn current_user(&self, subject: TokenSubject) -> Result<UserRow, Error> {
        store::find_user(&self.pool.get().await?, subject.user_id)
            .await?
            .ok_or_else(|| Error::token("account gone"))
    }

    /// Re-authentication: the caller's password, checked as a login's is (the same back-off
    /// and per-network limit, a failure recorded as an event).
    async fn confirm_password(
        &self,
        user: &UserRow,
        password: &str,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let account = Some((user.id, user.password_hash.as_str()));
        match self
            .check_password(&user.email, account, password, client, now)
            .await?
        {
            PasswordCheck::Matched { .. } => Ok(()),
            PasswordCheck::Failed => Err(Error::WrongPassword),
        }
    }

    /// The hash of a new password for the account of `email`, once it passes the policy (a 422
    /// on `new_password` otherwise), made in the bounded hashing pool.
    pub(super) async fn new_password_hash(&self, email: &str, new: &str) -> Result<String, Error> {
        let (email, new_password) = (email.to_owned(), new.to_owned());
        let (min_score, iterations) = (
            self.config.password_min_score,
            self.config.pbkdf2_iterations,
        );
        // Strength scoring runs in the bounded pool, like the hash that follows it.
        let normalised = self
            .hashing
            .run(move || password::check_new_password(&new_password, &email, min_score))
            .await??;
        password::hash_password(&self.hashing, &normalised, iterations).await
    }

    /// Changes the password after re-checking the current one; every other session ends, so a
    /// thief holding one of them is out.
    pub async fn change_password(
        &self,
        subject: TokenSubject,
        current: &str,
        new: &str,
        keyed: Option<KeyedRequest>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let user = self.current_user(subject).await?;
        self.confirm_password(&user, current, client, now).await?;
        let new_hash = self.new_password_hash(&user.email, new).await?;
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        if record_request(&tx, keyed, now).await? {
            return Ok(());
        }
        // Two changes racing: the second finds the hash it checked gone.
        if !store::set_password_hash(&tx, user.id, &user.password_hash, &new_hash).await? {
            return Err(Error::WrongPassword);
        }
        store::revoke_other_sessions(&tx, user.id, subject.session_id, now).await?;
        // A reset link mailed before the change must not undo it.
        store::delete_email_tokens(&tx, user.id, store::LinkPurpose::Reset).await?;
        record_event(&tx, user.id, store::EventType::PasswordChanged, client, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the account with its sessions, tokens and events; the email is free again.
    pub async fn delete_account(
        &self,
        subject: TokenSubject,
        password: &str,
        keyed: Option<KeyedRequest>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let user = self.current_user(subject).await?;
        self.confirm_password(&user, password, client, now).await?;
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        if record_request(&tx, keyed, now).await? {
            return Ok(());
        }
        store::delete_user(&tx, user.id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest security events of the caller.
    pub async fn events(&self, subject: TokenSubject) -> Result<Vec<SecurityEvent>, Error> {
        let rows =
            store::recent_events(&self.pool.get().await?, subject.user_id, EVENTS_SHOWN).await?;
        Ok(rows
            .into_iter()
            .map(|row| SecurityEvent {
                kind: row.kind,
                at: row.at,
                ip: row.ip,
                user_agent: row.user_agent,
            })
            .collect())
    }
}
