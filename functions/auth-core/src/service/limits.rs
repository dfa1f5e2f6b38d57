//! The per-network limits and the password back-off, counted in PostgreSQL so that they hold
//! across every instance.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Auth, ClientInfo, record_event};
use crate::error::Error;
use crate::password::{self, Verification};
use crate::store;
use crate::token;

/// The outcome of a password check that was allowed to run.
pub(super) enum PasswordCheck {
    /// The password as typed (normalised), for a re-hash.
    Matched {
        password: String,
        needs_rehash: bool,
    },
    Failed,
}

impl Auth {
    /// Counts a request against the client network's limit for `action` (0 disables it). A
    /// request whose address is unknown (a Lambda event without `sourceIp`) is not counted: one
    /// shared bucket would let any one client lock every other out.
    pub(super) async fn limit_per_network(
        &self,
        action: &str,
        client: &ClientInfo,
        limit: u32,
        period: time::Duration,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let Some(network) = client.network.as_deref() else {
            tracing::debug!(
                action,
                "no client address: the per-network limit does not apply"
            );
            return Ok(());
        };
        if limit == 0 {
            return Ok(());
        }
        self.take_limit(&format!("{action}:{network}"), limit, period, now)
            .await
    }

    /// Counts a request against `bucket` (`limit` per `period`, across instances): **429** with
    /// the wait when it is spent.
    pub(super) async fn take_limit(
        &self,
        bucket: &str,
        limit: u32,
        period: time::Duration,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let db = self.pool.get().await?;
        match store::take_rate_limit(&db, bucket, limit, period, now).await? {
            None => Ok(()),
            Some(retry_after_secs) => Err(Error::TooManyRequests { retry_after_secs }),
        }
    }

    /// Checks a password the way every password check must be checked (login, password change,
    /// account deletion): within the client network's limit and the email's back-off, the hash
    /// in the bounded pool, a failure charged after the check and recorded as an event of the
    /// account, a success clearing the count. `stored_hash` is `None` for an unknown email,
    /// which costs the same hash as a known one.
    pub(super) async fn check_password(
        &self,
        email: &str,
        account: Option<(Uuid, &str)>,
        raw_password: &str,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<PasswordCheck, Error> {
        self.limit_per_network(
            "password",
            client,
            self.config.ip_logins_per_minute,
            time::Duration::MINUTE,
            now,
        )
        .await?;
        let email_hash = token::sha256(email.as_bytes());
        let waited = store::password_backoff(
            &self.pool.get().await?,
            &email_hash,
            client.network.as_deref(),
            i32::try_from(self.config.login_free_failures).unwrap_or(i32::MAX),
            i32::try_from(self.config.login_account_failures).unwrap_or(i32::MAX),
            now,
        )
        .await?;
        if let Some(retry_after_secs) = waited {
            return Err(Error::TooManyRequests { retry_after_secs });
        }
        // No account can have a password past the length rule: a failure without hashing it.
        let matched = match password::password_as_typed(raw_password) {
            Some(password) => {
                let stored = account.map_or_else(|| self.dummy_hash.clone(), |(_, h)| h.to_owned());
                let iterations = self.config.pbkdf2_iterations;
                let verification =
                    password::verify_password(&self.hashing, &password, &stored, iterations)
                        .await?;
                match (account, verification) {
                    (Some(_), Verification::Match { needs_rehash }) => {
                        Some((password, needs_rehash))
                    }
                    _ => None,
                }
            }
            None => None,
        };
        let db = self.pool.get().await?;
        match matched {
            Some((password, needs_rehash)) => {
                store::clear_password_failures(&db, &email_hash).await?;
                Ok(PasswordCheck::Matched {
                    password,
                    needs_rehash,
                })
            }
            None => {
                store::record_password_failure(&db, &email_hash, client.network.as_deref(), now)
                    .await?;
                if let Some((user_id, _)) = account {
                    record_event(&db, user_id, store::EventType::LoginFailed, client, now).await?;
                }
                Ok(PasswordCheck::Failed)
            }
        }
    }
}
