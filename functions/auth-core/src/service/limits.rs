//! The per-IP limits and the login back-off, counted in PostgreSQL so that they hold across
//! every instance.

use time::OffsetDateTime;

use super::{Auth, ClientInfo, to_time};
use crate::error::Error;
use crate::store;
use crate::token;

impl Auth {
    /// Counts a request against the client's per-IP limit (0 disables it); now and then also
    /// deletes spent counters and dead sessions, so the tables stay bounded without a separate job.
    pub(super) async fn limit_per_ip(
        &self,
        action: &str,
        client: &ClientInfo,
        limit: u32,
        period: time::Duration,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let db = self.pool.get().await?;
        if getrandom::u32().is_ok_and(|n| n % 64 == 0) {
            store::prune_expired(&db, now, to_time(self.config.session_idle)).await?;
        }
        if limit == 0 {
            return Ok(());
        }
        let bucket = format!("{action}:{}", client.ip.as_deref().unwrap_or("unknown"));
        match store::take_rate_limit(&db, &bucket, limit, period, now).await? {
            None => Ok(()),
            Some(retry_after_secs) => Err(Error::TooManyRequests { retry_after_secs }),
        }
    }

    /// Charges one login attempt for `email` (unparseable ones share one bucket, so the answer
    /// cannot differ from a real one). Returns the key that a success clears.
    pub(super) async fn charge_login_attempt(
        &self,
        email: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<[u8; 32], Error> {
        let email_hash = token::sha256(email.unwrap_or("").as_bytes());
        let free = i32::try_from(self.config.login_free_failures).unwrap_or(i32::MAX);
        let db = self.pool.get().await?;
        match store::charge_login_attempt(&db, &email_hash, free, now).await? {
            None => Ok(email_hash),
            Some(retry_after_secs) => Err(Error::TooManyRequests { retry_after_secs }),
        }
    }
}
