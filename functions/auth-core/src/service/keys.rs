//! The signing keys: the ring every instance loads from the database, and its rotation plan.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use time::OffsetDateTime;

use super::to_time;
use crate::config::{Config, SigningAlg};
use crate::error::Error;
use crate::store::{self, KeyScheduleEntry};
use crate::token::{self, AccessTokenSettings, KeyRing, Rejection, TokenSubject, VerifiedTokens};

/// How long an instance trusts its copy of the key ring before re-reading it, so that keys
/// created by another instance (rotation) are seen within this bound.
const KEY_RING_MAX_AGE: Duration = Duration::from_secs(60);
/// An unknown `kid` may be a key another instance just made; re-read at most this often, so
/// forged tokens cannot turn into a database load.
const UNKNOWN_KID_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Verified access tokens remembered per instance (about 100 bytes each): far more than the
/// sessions one instance serves within a token's lifetime at any load it can carry.
const VERIFIED_TOKENS_KEPT: usize = 16_384;

/// Which keys to add to the schedule at `now`: the first key on a new database, and the next key
/// once the current one nears the end of its period, published a lead time before it signs.
pub fn plan_new_keys(
    schedule: &[KeyScheduleEntry],
    alg: SigningAlg,
    now: OffsetDateTime,
    rotation: Duration,
) -> Vec<OffsetDateTime> {
    let rotation = to_time(rotation);
    // Long enough for every verifier's cached JWKS (max-age 300 s) to pick the key up.
    let lead = (rotation / 2_i32).min(time::Duration::DAY);
    let current = schedule
        .iter()
        .rev()
        .find(|key| key.alg == alg && key.signs_from <= now);
    let has_next = schedule
        .iter()
        .any(|key| key.alg == alg && key.signs_from > now);
    match current {
        None if !has_next => vec![now],
        None => Vec::new(),
        Some(current) if !has_next && now >= current.signs_from + rotation - lead => {
            vec![(current.signs_from + rotation).max(now + lead)]
        }
        Some(_) => Vec::new(),
    }
}

/// This instance's copy of the shared signing keys, and the one place that changes them.
pub struct SigningKeys {
    alg: SigningAlg,
    rotation: Duration,
    kek: Option<[u8; 32]>,
    /// How long a retired key's tokens may live: it verifies (and is published) until then.
    access_ttl: Duration,
    ring: RwLock<Arc<KeyRing>>,
    /// One reload or rotation at a time per instance; the database lock orders instances.
    maintenance: tokio::sync::Mutex<()>,
    last_unknown_kid_reload: std::sync::Mutex<Option<Instant>>,
    verified: VerifiedTokens,
}

impl SigningKeys {
    pub fn new(config: &Config) -> Self {
        SigningKeys {
            alg: config.signing_alg,
            rotation: config.key_rotation,
            kek: config.key_encryption_key,
            access_ttl: config.access_ttl,
            ring: RwLock::new(Arc::new(KeyRing::empty())),
            maintenance: tokio::sync::Mutex::new(()),
            last_unknown_kid_reload: std::sync::Mutex::new(None),
            verified: VerifiedTokens::new(VERIFIED_TOKENS_KEPT),
        }
    }

    /// The ring as loaded last.
    pub fn ring(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(ring) => Arc::clone(&ring),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Makes the next token request re-read the ring, as it would once the ring is a minute
    /// old. For tests of what happens across a reload.
    pub fn expire_ring(&self) {
        let ring = self.ring();
        let mut aged = KeyRing::clone(&ring);
        aged.loaded_at = Instant::now()
            .checked_sub(KEY_RING_MAX_AGE)
            .unwrap_or(aged.loaded_at);
        self.replace_ring(aged);
    }

    fn replace_ring(&self, ring: KeyRing) {
        match self.ring.write() {
            Ok(mut slot) => *slot = Arc::new(ring),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
        }
    }

    /// Adds the keys the schedule needs (whichever instance gets the lock first does it) and
    /// reloads the ring from the database.
    pub async fn maintain(&self, pool: &Pool, now: OffsetDateTime) -> Result<(), Error> {
        let _one_at_a_time = self.maintenance.lock().await;
        self.maintain_locked(pool, now).await
    }

    async fn maintain_locked(&self, pool: &Pool, now: OffsetDateTime) -> Result<(), Error> {
        let mut db = pool.get().await?;
        let tx = db.transaction().await?;
        store::lock_key_schedule(&tx).await?;
        let schedule = store::key_schedule(&tx).await?;
        let planned = plan_new_keys(&schedule, self.alg, now, self.rotation);
        for signs_from in &planned {
            let key = token::generate_key(self.alg)?;
            let (private_key, encrypted) =
                crate::seal::protect(self.kek.as_ref(), &key.kid, &key.private_pkcs8)?;
            store::insert_key(&tx, &key, &private_key, encrypted, *signs_from, now).await?;
        }
        let mut ring = KeyRing::new(store::load_keys(&tx).await?, self.kek.as_ref())?;
        let retired = ring.retired_with_private_half(now, self.access_ttl);
        if !retired.is_empty() {
            store::wipe_private_keys(&tx, &retired).await?;
            ring.forget_private_halves(&retired);
        }
        tx.commit().await?;
        drop(db);
        if !retired.is_empty() {
            tracing::info!(
                retired = retired.len(),
                "wiped the private half of retired signing keys"
            );
        }
        if !planned.is_empty() {
            tracing::info!(
                added = planned.len(),
                alg = self.alg.as_str(),
                "created signing keys"
            );
        }
        self.replace_ring(ring);
        Ok(())
    }

    /// The ring, re-read first when it is older than [`KEY_RING_MAX_AGE`]. While one request
    /// re-reads it, the others go on with the copy they have.
    pub async fn fresh_ring(
        &self,
        pool: &Pool,
        now: OffsetDateTime,
    ) -> Result<Arc<KeyRing>, Error> {
        let ring = self.ring();
        if ring.loaded_at.elapsed() < KEY_RING_MAX_AGE {
            return Ok(ring);
        }
        let Ok(_one_at_a_time) = self.maintenance.try_lock() else {
            return Ok(ring);
        };
        match self.maintain_locked(pool, now).await {
            Ok(()) => Ok(self.ring()),
            // The copy in memory still signs and verifies; a database blip must not fail a
            // token response whose writes are already committed.
            Err(error) if ring.can_sign(self.alg, now) => {
                tracing::warn!(error = %crate::error::cause_chain(&error), "key ring reload failed; using the loaded keys");
                Ok(ring)
            }
            Err(error) => Err(error),
        }
    }

    /// Signature and claims only; reloads the ring once when the `kid` is new to us. A token
    /// verified before on this instance skips the signature check (see [`VerifiedTokens`]).
    pub async fn verify(
        &self,
        pool: &Pool,
        settings: &AccessTokenSettings<'_>,
        bearer: &str,
        now: OffsetDateTime,
    ) -> Result<TokenSubject, Error> {
        let digest = token::sha256(bearer.as_bytes());
        if let Some(verified) = self.verified.get(&digest) {
            return verified.recheck(&self.ring(), settings, now).map_err(
                |rejection| match rejection {
                    Rejection::Invalid(reason) => Error::token(reason),
                    Rejection::UnknownKey => Error::token("unknown kid"),
                },
            );
        }
        let verified = match token::verify_access_token(&self.ring(), settings, bearer, now) {
            Ok(verified) => verified,
            Err(Rejection::Invalid(reason)) => return Err(Error::token(reason)),
            Err(Rejection::UnknownKey) => {
                if !self.unknown_kid_reload_due() {
                    return Err(Error::token("unknown kid"));
                }
                self.maintain(pool, now).await?;
                token::verify_access_token(&self.ring(), settings, bearer, now)
                    .map_err(|_| Error::token("unknown kid"))?
            }
        };
        let subject = verified.subject;
        self.verified.insert(digest, verified, now);
        Ok(subject)
    }

    fn unknown_kid_reload_due(&self) -> bool {
        match self.last_unknown_kid_reload.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|at| at.elapsed() >= UNKNOWN_KID_RELOAD_INTERVAL);
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::days(days)
    }

    fn entry(days: i64) -> KeyScheduleEntry {
        KeyScheduleEntry {
            alg: SigningAlg::Es256,
            signs_from: at(days),
        }
    }

    const THIRTY_DAYS: Duration = Duration::from_secs(30 * 86_400);

    #[test]
    fn a_new_database_gets_one_key_signing_now() {
        assert_eq!(
            plan_new_keys(&[], SigningAlg::Es256, at(0), THIRTY_DAYS),
            vec![at(0)]
        );
    }

    #[test]
    fn the_next_key_is_published_a_day_before_it_signs() {
        assert!(plan_new_keys(&[entry(0)], SigningAlg::Es256, at(28), THIRTY_DAYS).is_empty());
        assert_eq!(
            plan_new_keys(&[entry(0)], SigningAlg::Es256, at(29), THIRTY_DAYS),
            vec![at(30)]
        );
        assert!(
            plan_new_keys(
                &[entry(0), entry(30)],
                SigningAlg::Es256,
                at(29),
                THIRTY_DAYS
            )
            .is_empty()
        );
    }

    #[test]
    fn a_late_rotation_still_publishes_before_signing() {
        assert_eq!(
            plan_new_keys(&[entry(0)], SigningAlg::Es256, at(45), THIRTY_DAYS),
            vec![at(46)]
        );
    }
}
