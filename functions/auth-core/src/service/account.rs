//! The signed-in account: who it is, its history, changing its password, deleting it.

use time::OffsetDateTime;

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
            .map(Account::from)
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

    /// Changes the password after re-checking the current one; every other session ends, so a
    /// thief holding one of them is out.
    pub async fn change_password(
        &self,
        subject: TokenSubject,
        current: &str,
        new: &str,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let user = self.current_user(subject).await?;
        self.confirm_password(&user, current, client, now).await?;
        let (email, new_password) = (user.email.clone(), new.to_owned());
        let (min_score, iterations) = (
            self.config.password_min_score,
            self.config.pbkdf2_iterations,
        );
        let normalised = self
            .hashing
            .run(move || {
                let normalised = password::normalise_password(&new_password);
                password::check_password_policy(&normalised, &email, min_score)
                    .map(|()| normalised)
                    .map_err(|reasons| {
                        let mut errors = crate::error::FieldErrors::new();
                        errors.insert("new_password", reasons);
                        Error::Validation(errors)
                    })
            })
            .await??;
        let new_hash = password::hash_password(&self.hashing, &normalised, iterations).await?;
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        // Two changes racing: the second finds the hash it checked gone.
        if !store::set_password_hash(&tx, user.id, &user.password_hash, &new_hash).await? {
            return Err(Error::WrongPassword);
        }
        store::revoke_other_sessions(&tx, user.id, subject.session_id, now).await?;
        record_event(&tx, user.id, store::EventType::PasswordChanged, client, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the account with its sessions, tokens and events; the email is free again.
    pub async fn delete_account(
        &self,
        subject: TokenSubject,
        password: &str,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let user = self.current_user(subject).await?;
        self.confirm_password(&user, password, client, now).await?;
        store::delete_user(&self.pool.get().await?, user.id).await
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
