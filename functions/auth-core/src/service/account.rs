//! The signed-in account: who it is, its history, changing its password, deleting it.

use time::OffsetDateTime;

use super::{Account, Auth, ClientInfo, SecurityEvent, record_event};
use crate::error::Error;
use crate::password::{self, Verification};
use crate::store::{self, UserRow};
use crate::token::TokenSubject;

/// Events shown to the account's owner.
const EVENTS_SHOWN: i64 = 50;

impl Auth {
    pub async fn me(&self, subject: TokenSubject) -> Result<Account, Error> {
        self.current_user(subject).await.map(Account::from)
    }

    async fn current_user(&self, subject: TokenSubject) -> Result<UserRow, Error> {
        store::find_user(&self.pool.get().await?, subject.user_id)
            .await?
            .ok_or_else(|| Error::token("account gone"))
    }

    /// Checks `password` against the caller's stored hash in the hashing pool.
    async fn check_password(&self, user: &UserRow, password: &str) -> Result<(), Error> {
        // No account can have a password past the length rule: wrong without hashing it.
        let password = password::password_as_typed(password).ok_or(Error::WrongPassword)?;
        let (stored, iterations) = (user.password_hash.clone(), self.config.pbkdf2_iterations);
        match self
            .hashing
            .run(move || password::verify_password(&password, &stored, iterations))
            .await??
        {
            Verification::Match { .. } => Ok(()),
            Verification::Mismatch => Err(Error::WrongPassword),
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
        self.check_password(&user, current).await?;
        let (email, new_password) = (user.email.clone(), new.to_owned());
        let (min_score, iterations) = (
            self.config.password_min_score,
            self.config.pbkdf2_iterations,
        );
        let new_hash = self
            .hashing
            .run(move || {
                let normalised = password::normalise_password(&new_password);
                password::check_password_policy(&normalised, &email, min_score).map_err(
                    |reasons| {
                        let mut errors = crate::error::FieldErrors::new();
                        errors.insert("new_password", reasons);
                        Error::Validation(errors)
                    },
                )?;
                password::hash_password(&normalised, iterations)
            })
            .await??;
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        store::set_password_hash(&tx, user.id, &new_hash).await?;
        store::revoke_other_sessions(&tx, user.id, subject.session_id, now).await?;
        record_event(&tx, user.id, store::EventType::PasswordChanged, client, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the account with its sessions, tokens and events; the email is free again.
    pub async fn delete_account(&self, subject: TokenSubject, password: &str) -> Result<(), Error> {
        let user = self.current_user(subject).await?;
        self.check_password(&user, password).await?;
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
