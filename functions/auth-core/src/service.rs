//! The use cases: register, login, refresh, logout, who-am-I, keys. No HTTP types here.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::{Config, SigningAlg};
use crate::error::Error;
use crate::password::{self, HashingPool, Verification};
use crate::store::{self, KeyScheduleEntry, NewSession, UserRow};
use crate::token::{self, AccessTokenSettings, KeyRing, NewKey, Rejection, TokenSubject};

/// How long an instance trusts its copy of the key ring before re-reading it, so that keys
/// created by another instance (rotation) are seen within this bound.
const KEY_RING_MAX_AGE: Duration = Duration::from_secs(60);
/// An unknown `kid` may be a key another instance just made; re-read at most this often, so
/// forged tokens cannot turn into a database load.
const UNKNOWN_KID_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
const REFRESH_SECRET_NAME: &str = "refresh_successor_v1";
const DUMMY_PASSWORD: &str = "latchkey dummy password for unknown emails";
/// Longest user agent kept with a session.
const MAX_USER_AGENT_CHARS: usize = 256;

/// Where a request came from, recorded with sessions.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub fn new(ip: Option<String>, user_agent: Option<&str>) -> Self {
        ClientInfo {
            ip,
            user_agent: user_agent.map(|agent| agent.chars().take(MAX_USER_AGENT_CHARS).collect()),
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<UserRow> for UserView {
    fn from(user: UserRow) -> Self {
        UserView {
            id: user.id,
            email: user.email,
            created_at: user.created_at,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_used_at: OffsetDateTime,
    /// The session's absolute end; the idle limit can end it sooner.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub current: bool,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EventView {
    /// registered, login_succeeded, login_failed, refreshed_reuse_detected, logged_out,
    /// session_revoked or password_changed.
    #[serde(rename = "type")]
    #[schema(example = "login_succeeded")]
    pub kind: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The token response of register, login and refresh.
#[derive(Debug, Serialize, ToSchema)]
pub struct Grant {
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_expires_in: u64,
    pub user: UserView,
}

pub struct Auth {
    pub config: Config,
    pub pool: Pool,
    pub hashing: HashingPool,
    pub metrics: crate::metrics::Metrics,
    keys: RwLock<Arc<KeyRing>>,
    last_unknown_kid_reload: std::sync::Mutex<Option<Instant>>,
    key_maintenance: tokio::sync::Mutex<()>,
    refresh_secret: Vec<u8>,
    dummy_hash: String,
}

fn to_time(duration: Duration) -> time::Duration {
    time::Duration::try_from(duration).unwrap_or(time::Duration::MAX)
}

/// Records a security event with where the request came from.
async fn record_event(
    db: &impl deadpool_postgres::GenericClient,
    user_id: Uuid,
    event: store::EventType,
    client: &ClientInfo,
    now: OffsetDateTime,
) -> Result<(), Error> {
    store::record_event(
        db,
        user_id,
        event,
        now,
        client.ip.as_deref(),
        client.user_agent.as_deref(),
    )
    .await
}

/// PostgreSQL keeps microseconds; truncating first makes a time read back equal the one returned.
fn to_stored_precision(time: OffsetDateTime) -> OffsetDateTime {
    time.replace_nanosecond(time.nanosecond() / 1000 * 1000)
        .unwrap_or(time)
}

fn whole_seconds(duration: time::Duration) -> u64 {
    u64::try_from(duration.whole_seconds()).unwrap_or(0)
}

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

impl Auth {
    /// Connects, migrates, and makes sure the shared keys and secrets exist. Fails fast when the
    /// database is unreachable; the caller decides whether to retry.
    pub async fn init(config: Config) -> Result<Self, Error> {
        let pool = crate::db::create_pool(&config)?;
        crate::db::migrate(&pool).await?;
        let hashing = HashingPool::new(config.max_concurrent_hashes, config.hash_queue)?;
        let kek = config.key_encryption_key;
        let client = pool.get().await?;
        let (stored_secret, encrypted) =
            store::get_or_create_secret(&client, REFRESH_SECRET_NAME, || {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret)
                    .map_err(|e| Error::internal("no randomness for a secret", e.to_string()))?;
                token::protect(kek.as_ref(), REFRESH_SECRET_NAME, &secret)
            })
            .await?;
        drop(client);
        let refresh_secret =
            token::unprotect(kek.as_ref(), REFRESH_SECRET_NAME, stored_secret, encrypted)?;
        let iterations = config.pbkdf2_iterations;
        let dummy_hash = hashing
            .run(move || password::hash_password(DUMMY_PASSWORD, iterations))
            .await??;
        let auth = Auth {
            config,
            pool,
            hashing,
            metrics: crate::metrics::Metrics::default(),
            keys: RwLock::new(Arc::new(KeyRing::empty())),
            last_unknown_kid_reload: std::sync::Mutex::new(None),
            key_maintenance: tokio::sync::Mutex::new(()),
            refresh_secret,
            dummy_hash,
        };
        auth.maintain_keys(OffsetDateTime::now_utc()).await?;
        Ok(auth)
    }

    fn token_settings(&self) -> AccessTokenSettings<'_> {
        AccessTokenSettings {
            alg: self.config.signing_alg,
            issuer: &self.config.issuer,
            audience: &self.config.audience,
            ttl: self.config.access_ttl,
        }
    }

    fn key_ring(&self) -> Arc<KeyRing> {
        match self.keys.read() {
            Ok(ring) => Arc::clone(&ring),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Adds keys the schedule needs (whichever instance gets the lock first does it) and reloads
    /// the ring from the database.
    pub async fn maintain_keys(&self, now: OffsetDateTime) -> Result<(), Error> {
        let _one_at_a_time = self.key_maintenance.lock().await;
        self.maintain_keys_locked(now).await
    }

    async fn maintain_keys_locked(&self, now: OffsetDateTime) -> Result<(), Error> {
        let alg = self.config.signing_alg;
        let rotation = self.config.key_rotation;
        let kek = self.config.key_encryption_key;
        let mut client = self.pool.get().await?;
        let added = store::add_keys_if_needed(&mut client, |schedule| {
            plan_new_keys(schedule, alg, now, rotation)
                .into_iter()
                .map(|signs_from| {
                    let key: NewKey = token::generate_key(alg)?;
                    let (stored, encrypted) =
                        token::protect(kek.as_ref(), &key.kid, &key.private_pkcs8)?;
                    Ok((key, stored, encrypted, signs_from))
                })
                .collect()
        })
        .await?;
        if added > 0 {
            tracing::info!(added, alg = alg.as_str(), "created signing keys");
        }
        let ring = KeyRing::new(store::load_keys(&client).await?, kek.as_ref())?;
        match self.keys.write() {
            Ok(mut slot) => *slot = Arc::new(ring),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
        }
        Ok(())
    }

    /// The ring, re-read first when it is older than [`KEY_RING_MAX_AGE`]. While one request
    /// re-reads it, the others go on with the copy they have.
    async fn fresh_key_ring(&self, now: OffsetDateTime) -> Result<Arc<KeyRing>, Error> {
        let ring = self.key_ring();
        if ring.loaded_at.elapsed() < KEY_RING_MAX_AGE {
            return Ok(ring);
        }
        let Ok(_one_at_a_time) = self.key_maintenance.try_lock() else {
            return Ok(ring);
        };
        match self.maintain_keys_locked(now).await {
            Ok(()) => Ok(self.key_ring()),
            // The copy in memory still signs and verifies; a database blip must not fail a
            // token response whose writes are already committed.
            Err(error) if ring.can_sign(self.config.signing_alg, now) => {
                tracing::warn!(error = %crate::error::cause_chain(&error), "key ring reload failed; using the loaded keys");
                Ok(ring)
            }
            Err(error) => Err(error),
        }
    }

    async fn grant(
        &self,
        user: UserView,
        session_id: Uuid,
        session_expires_at: OffsetDateTime,
        refresh_token: String,
        now: OffsetDateTime,
    ) -> Result<Grant, Error> {
        let ring = self.fresh_key_ring(now).await?;
        let access_token = token::issue_access_token(
            &ring,
            &self.token_settings(),
            TokenSubject {
                user_id: user.id,
                session_id,
            },
            now,
        )?;
        Ok(Grant {
            token_type: "Bearer",
            access_token,
            expires_in: self.config.access_ttl.as_secs(),
            refresh_token,
            refresh_expires_in: whole_seconds(session_expires_at - now),
            user,
        })
    }

    pub async fn register(
        &self,
        raw_email: &str,
        raw_password: &str,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<Grant, Error> {
        self.limit_per_ip(
            "register",
            client,
            self.config.ip_registrations_per_hour,
            time::Duration::HOUR,
            now,
        )
        .await?;
        // Strength scoring costs milliseconds of CPU too, so it runs in the bounded pool with the
        // hash: a registration flood meets 503 `overloaded` instead of stalling the server.
        let (raw_email, raw_password) = (raw_email.to_owned(), raw_password.to_owned());
        let (min_score, iterations) = (
            self.config.password_min_score,
            self.config.pbkdf2_iterations,
        );
        let (email, password_hash) = self
            .hashing
            .run(move || {
                let (email, password) =
                    password::validate_credentials(&raw_email, &raw_password, min_score)?;
                Ok::<_, Error>((email, password::hash_password(&password, iterations)?))
            })
            .await??;
        let user = UserRow {
            id: Uuid::now_v7(),
            email,
            password_hash,
            created_at: to_stored_precision(now),
        };
        let refresh_token = token::new_refresh_token()?;
        let session_id = Uuid::now_v7();
        let expires_at = now + to_time(self.config.session_ttl);
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        store::insert_user(&tx, &user).await?;
        store::insert_session(
            &tx,
            &self.new_session(session_id, user.id, now, expires_at, client),
        )
        .await?;
        store::insert_refresh_token(
            &tx,
            &token::refresh_token_hash(&refresh_token),
            session_id,
            now,
        )
        .await?;
        record_event(&tx, user.id, store::EventType::Registered, client, now).await?;
        tx.commit().await?;
        self.grant(user.into(), session_id, expires_at, refresh_token, now)
            .await
    }

    fn new_session<'a>(
        &self,
        id: Uuid,
        user_id: Uuid,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
        client: &'a ClientInfo,
    ) -> NewSession<'a> {
        NewSession {
            id,
            user_id,
            now,
            expires_at,
            ip: client.ip.as_deref(),
            user_agent: client.user_agent.as_deref(),
        }
    }

    pub async fn login(
        &self,
        raw_email: &str,
        raw_password: &str,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<Grant, Error> {
        self.limit_per_ip(
            "login",
            client,
            self.config.ip_logins_per_minute,
            time::Duration::MINUTE,
            now,
        )
        .await?;
        let email = password::normalise_email(raw_email).ok();
        // Unparseable emails share one back-off bucket: the answer must not differ from a real one.
        let email_hash = token::sha256(email.as_deref().unwrap_or("").as_bytes());
        let free = i32::try_from(self.config.login_free_failures).unwrap_or(i32::MAX);
        if let Some(retry_after_secs) =
            store::charge_login_attempt(&self.pool.get().await?, &email_hash, free, now).await?
        {
            return Err(Error::TooManyRequests { retry_after_secs });
        }
        let password = password::normalise_password(raw_password);
        if password.chars().count() > password::MAX_PASSWORD_CHARS {
            // No account can have such a password; refuse without hashing 16 KiB.
            return Err(Error::InvalidCredentials);
        }
        let user = match &email {
            Some(email) => store::find_user_by_email(&self.pool.get().await?, email).await?,
            None => None,
        };
        // An unknown email costs the same hash as a known one, so neither the answer nor its
        // timing says whether an account exists.
        let stored_hash = user
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.password_hash.clone());
        let iterations = self.config.pbkdf2_iterations;
        let checked_password = password.clone();
        let verification = self
            .hashing
            .run(move || password::verify_password(&checked_password, &stored_hash, iterations))
            .await??;
        let user = match (user, verification) {
            (Some(user), Verification::Match { needs_rehash }) => {
                if needs_rehash {
                    self.rehash(user.id, &user.password_hash, password).await;
                }
                user
            }
            (Some(user), Verification::Mismatch) => {
                record_event(
                    &self.pool.get().await?,
                    user.id,
                    store::EventType::LoginFailed,
                    client,
                    now,
                )
                .await?;
                return Err(Error::InvalidCredentials);
            }
            (None, _) => return Err(Error::InvalidCredentials),
        };
        store::clear_login_failures(&self.pool.get().await?, &email_hash).await?;
        let refresh_token = token::new_refresh_token()?;
        let session_id = Uuid::now_v7();
        let expires_at = now + to_time(self.config.session_ttl);
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        store::insert_session(
            &tx,
            &self.new_session(session_id, user.id, now, expires_at, client),
        )
        .await?;
        store::insert_refresh_token(
            &tx,
            &token::refresh_token_hash(&refresh_token),
            session_id,
            now,
        )
        .await?;
        record_event(&tx, user.id, store::EventType::LoginSucceeded, client, now).await?;
        tx.commit().await?;
        self.grant(user.into(), session_id, expires_at, refresh_token, now)
            .await
    }

    /// Counts a request against the client's per-IP limit (0 disables it); now and then also
    /// deletes spent counters and dead sessions, so the tables stay bounded without a separate job.
    async fn limit_per_ip(
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

    /// Upgrades a hash made with fewer iterations than configured. A failure only delays the
    /// upgrade to the next login, so it is logged, not returned.
    async fn rehash(&self, user_id: Uuid, old_hash: &str, password: String) {
        let iterations = self.config.pbkdf2_iterations;
        let upgraded = async {
            let new_hash = self
                .hashing
                .run(move || password::hash_password(&password, iterations))
                .await??;
            store::replace_password_hash(&self.pool.get().await?, user_id, old_hash, &new_hash)
                .await
        };
        if let Err(error) = upgraded.await {
            tracing::warn!(%user_id, error = %crate::error::cause_chain(&error), "password re-hash postponed");
        }
    }

    /// Rotates a refresh token. A token presented again within the grace window gets the same
    /// successor; after it, the reuse revokes the whole session.
    pub async fn refresh(
        &self,
        presented: &str,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<Grant, Error> {
        if !token::looks_like_refresh_token(presented) {
            return Err(Error::token("malformed refresh token"));
        }
        let presented_hash = token::refresh_token_hash(presented);
        let successor = token::successor_refresh_token(&self.refresh_secret, presented)?;
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        let Some(row) = store::lock_refresh_token(&tx, &presented_hash).await? else {
            return Err(Error::token("unknown refresh token"));
        };
        let idle_limit = to_time(self.config.session_idle);
        if row.session_revoked
            || row.session_expires_at <= now
            || row.session_last_used_at + idle_limit <= now
        {
            return Err(Error::token("session ended"));
        }
        match row.used_at {
            None => {
                store::mark_refresh_token_used(&tx, &presented_hash, now).await?;
                store::insert_refresh_token(
                    &tx,
                    &token::refresh_token_hash(&successor),
                    row.session_id,
                    now,
                )
                .await?;
                store::touch_session(&tx, row.session_id, now).await?;
            }
            Some(used_at) if now - used_at <= to_time(self.config.refresh_reuse_grace) => {
                // A concurrent or retried refresh: hand out the successor the first one got.
            }
            Some(_) => {
                store::revoke_session(&tx, row.session_id, now).await?;
                record_event(
                    &tx,
                    row.user_id,
                    store::EventType::RefreshedReuseDetected,
                    client,
                    now,
                )
                .await?;
                tx.commit().await?;
                tracing::warn!(session_id = %row.session_id, "refresh token reuse detected; session revoked");
                return Err(Error::token("refresh token reused"));
            }
        }
        let user = store::find_user(&tx, row.user_id)
            .await?
            .ok_or_else(|| Error::token("account gone"))?;
        tx.commit().await?;
        self.grant(
            user.into(),
            row.session_id,
            row.session_expires_at,
            successor,
            now,
        )
        .await
    }

    /// Ends the session named by a valid access token and/or a refresh token. Unknown or dead
    /// tokens are not an error: the caller is signed out either way.
    pub async fn logout(
        &self,
        bearer: Option<&str>,
        refresh: Option<&str>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        // No connection is taken until there is something to revoke: signing out with nothing
        // usable is a 204 even while the database is down.
        let mut sessions = Vec::new();
        if let Some(bearer) = bearer
            && let Ok(subject) = self.verify_signature(bearer, now).await
        {
            sessions.push(subject.session_id);
        }
        if let Some(refresh) = refresh.filter(|token| token::looks_like_refresh_token(token))
            && let Some(session_id) = store::session_for_refresh_token(
                &self.pool.get().await?,
                &token::refresh_token_hash(refresh),
            )
            .await?
        {
            sessions.push(session_id);
        }
        for session_id in sessions {
            let mut db = self.pool.get().await?;
            let tx = db.transaction().await?;
            if let Some(user_id) = store::revoke_session(&tx, session_id, now).await? {
                record_event(&tx, user_id, store::EventType::LoggedOut, client, now).await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// The caller's live sessions, newest first, the calling one marked.
    pub async fn sessions(
        &self,
        subject: TokenSubject,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionView>, Error> {
        let rows = store::live_sessions(
            &self.pool.get().await?,
            subject.user_id,
            now,
            to_time(self.config.session_idle),
        )
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| SessionView {
                current: row.id == subject.session_id,
                id: row.id,
                created_at: row.created_at,
                last_used_at: row.last_used_at,
                expires_at: row.expires_at,
                ip: row.ip,
                user_agent: row.user_agent,
            })
            .collect())
    }

    /// Ends one of the caller's sessions; another user's session (or a dead one) is not found.
    pub async fn revoke_session(
        &self,
        subject: TokenSubject,
        session_id: Uuid,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        if !store::revoke_user_session(&tx, subject.user_id, session_id, now).await? {
            return Err(Error::NotFound);
        }
        record_event(
            &tx,
            subject.user_id,
            store::EventType::SessionRevoked,
            client,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends every session of the caller but the one making the request.
    pub async fn revoke_other_sessions(
        &self,
        subject: TokenSubject,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        if store::revoke_other_sessions(&tx, subject.user_id, subject.session_id, now).await? > 0 {
            record_event(
                &tx,
                subject.user_id,
                store::EventType::SessionRevoked,
                client,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Checks `password` against the caller's stored hash in the hashing pool.
    async fn check_password(&self, user: &UserRow, password: &str) -> Result<(), Error> {
        if password.chars().count() > 4 * password::MAX_PASSWORD_CHARS {
            return Err(Error::WrongPassword);
        }
        let (password, stored, iterations) = (
            password::normalise_password(password),
            user.password_hash.clone(),
            self.config.pbkdf2_iterations,
        );
        match self
            .hashing
            .run(move || password::verify_password(&password, &stored, iterations))
            .await??
        {
            Verification::Match { .. } => Ok(()),
            Verification::Mismatch => Err(Error::WrongPassword),
        }
    }

    async fn current_user(&self, subject: TokenSubject) -> Result<UserRow, Error> {
        store::find_user(&self.pool.get().await?, subject.user_id)
            .await?
            .ok_or_else(|| Error::token("account gone"))
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

    /// The newest 50 security events of the caller.
    pub async fn events(&self, subject: TokenSubject) -> Result<Vec<EventView>, Error> {
        let rows = store::recent_events(&self.pool.get().await?, subject.user_id, 50).await?;
        Ok(rows
            .into_iter()
            .map(|row| EventView {
                kind: row.kind,
                at: row.at,
                ip: row.ip,
                user_agent: row.user_agent,
            })
            .collect())
    }

    /// Signature and claims only; reloads the key ring once when the `kid` is new to us.
    async fn verify_signature(
        &self,
        bearer: &str,
        now: OffsetDateTime,
    ) -> Result<TokenSubject, Error> {
        let ring = self.key_ring();
        match token::verify_access_token(&ring, &self.token_settings(), bearer, now) {
            Ok(subject) => Ok(subject),
            Err(Rejection::Invalid(reason)) => Err(Error::token(reason)),
            Err(Rejection::UnknownKey) => {
                let may_reload = match self.last_unknown_kid_reload.lock() {
                    Ok(mut last) => {
                        let due = last.is_none_or(|at| at.elapsed() >= UNKNOWN_KID_RELOAD_INTERVAL);
                        if due {
                            *last = Some(Instant::now());
                        }
                        due
                    }
                    Err(_) => false,
                };
                if !may_reload {
                    return Err(Error::token("unknown kid"));
                }
                self.maintain_keys(now).await?;
                token::verify_access_token(&self.key_ring(), &self.token_settings(), bearer, now)
                    .map_err(|_| Error::token("unknown kid"))
            }
        }
    }

    /// Accepts an access token only while its session is alive, so that logout and revocation
    /// take effect at once on every instance.
    pub async fn authenticate(
        &self,
        bearer: &str,
        now: OffsetDateTime,
    ) -> Result<TokenSubject, Error> {
        let subject = self.verify_signature(bearer, now).await?;
        let db = self.pool.get().await?;
        let alive = store::session_is_alive(
            &db,
            subject.session_id,
            subject.user_id,
            now,
            to_time(self.config.session_idle),
        )
        .await?;
        if alive {
            Ok(subject)
        } else {
            Err(Error::token("session ended"))
        }
    }

    pub async fn me(&self, subject: TokenSubject) -> Result<UserView, Error> {
        let db = self.pool.get().await?;
        store::find_user(&db, subject.user_id)
            .await?
            .map(UserView::from)
            .ok_or_else(|| Error::token("account gone"))
    }

    pub async fn jwks(&self, now: OffsetDateTime) -> Result<serde_json::Value, Error> {
        let ring = self.fresh_key_ring(now).await?;
        Ok(ring.jwks(now, self.config.access_ttl))
    }

    /// Ready when the database answers and has every migration this binary ships.
    pub async fn ready(&self) -> bool {
        let Ok(db) = self.pool.get().await else {
            return false;
        };
        matches!(store::applied_migration_version(&db).await, Ok(Some(version)) if version >= crate::db::latest_migration_version())
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
