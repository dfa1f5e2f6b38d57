//! The use cases: register, login, refresh, logout, the account, its sessions, the keys. No HTTP
//! types here. A use case holds at most one pooled connection at a time, opens at most one
//! transaction, and gives the connection back before slow work (hashing, signing).

mod account;
mod email;
mod idempotency;
mod keys;
mod limits;
mod session_checks;
mod sessions;
mod sign_in;
mod tokens;

use std::time::Duration;

use deadpool_postgres::Pool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::Config;
use crate::error::Error;
use crate::hashing::HashingPool;
use crate::password;
use crate::store::{self, UserRow};

pub use idempotency::{KEY_KEPT, KeyedRequest, SignedInCaller};
pub use keys::{SigningKeys, plan_new_keys};

const REFRESH_SECRET_NAME: &str = "refresh_successor_v1";
const DUMMY_PASSWORD: &str = "latchkey dummy password for unknown emails";
/// Longest user agent kept with a session.
const MAX_USER_AGENT_CHARS: usize = 256;

/// Where a request came from, recorded with sessions and events.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    /// What the per-network limits and the back-off count by: see [`client_network`].
    pub network: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub fn new(ip: Option<std::net::IpAddr>, user_agent: Option<&str>) -> Self {
        ClientInfo {
            ip: ip.map(|ip| ip.to_canonical().to_string()),
            network: ip.map(client_network),
            user_agent: user_agent.map(|agent| agent.chars().take(MAX_USER_AGENT_CHARS).collect()),
        }
    }
}

/// A client network: an IPv4 address, or the /64 of an IPv6 one (one host is routinely given a
/// whole /64, so counting single IPv6 addresses would give it 2^64 budgets). An IPv4-mapped IPv6
/// address is its IPv4 address.
pub fn client_network(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
    }
}

/// An account as its owner may see it.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: Uuid,
    pub email: String,
    pub created_at: OffsetDateTime,
    /// Whether the address was verified; `None` (not shown) while verification is off.
    pub email_verified: Option<bool>,
}

impl From<UserRow> for Account {
    fn from(user: UserRow) -> Self {
        Account {
            id: user.id,
            email: user.email,
            created_at: user.created_at,
            email_verified: Some(user.email_verified_at.is_some()),
        }
    }
}

/// One of the account's live sessions, as stored, and whether it is the one asking.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub session: store::SessionRow,
    /// The session making the request.
    pub current: bool,
}

/// One entry of the account's security history.
#[derive(Clone, Debug)]
pub struct SecurityEvent {
    pub kind: String,
    pub at: OffsetDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// What register, login and refresh hand out.
#[derive(Debug)]
pub struct SignedIn {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
    /// Seconds until the session's absolute end.
    pub refresh_expires_in: u64,
    pub account: Account,
}

pub struct Auth {
    pub config: Config,
    pub pool: Pool,
    pub hashing: HashingPool,
    pub metrics: crate::metrics::Metrics,
    pub keys: SigningKeys,
    refresh_secret: Vec<u8>,
    dummy_hash: String,
    session_checks: session_checks::SessionChecks,
    /// The pruning task of this instance, stopped with it.
    housekeeping: tokio::task::AbortHandle,
    outbox: std::sync::Arc<email::Outbox>,
    /// This instance's outbox worker, stopped with it.
    mail_worker: tokio::task::AbortHandle,
}

impl Drop for Auth {
    fn drop(&mut self) {
        self.housekeeping.abort();
        self.mail_worker.abort();
    }
}

/// How often each instance deletes what no longer matters (see [`store::prune_expired`]): off
/// the request path, so that no request waits on a large delete.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);

/// The first pass comes soon after start-up rather than a whole interval later, so that a backlog
/// left while no instance ran (or a fleet that restarts often, as Lambda copies do) is drained.
const HOUSEKEEPING_FIRST_PASS: Duration = Duration::from_secs(5);

/// Between two batches of one pass: a backlog of millions of rows is drained in minutes without
/// keeping a connection and the database's disk busy back to back.
const HOUSEKEEPING_BATCH_PAUSE: Duration = Duration::from_millis(50);

/// At most this many batches per pass (a million rows per table); the next pass goes on.
const HOUSEKEEPING_BATCHES_PER_PASS: usize = 200;

async fn keep_house(pool: Pool, idle_limit: time::Duration) {
    tokio::time::sleep(HOUSEKEEPING_FIRST_PASS).await;
    let mut interval = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(error) = prune(&pool, idle_limit, None).await {
            tracing::warn!(error = %crate::error::cause_chain(&error), "housekeeping postponed");
        }
    }
}

/// One pass: batches until no table fills one (or the pass's limit). `at` fixes the time, for
/// tests; otherwise each batch takes the time it runs at.
async fn prune(
    pool: &Pool,
    idle_limit: time::Duration,
    at: Option<OffsetDateTime>,
) -> Result<(), Error> {
    for batch in 0..HOUSEKEEPING_BATCHES_PER_PASS {
        if batch > 0 {
            tokio::time::sleep(HOUSEKEEPING_BATCH_PAUSE).await;
        }
        let now = at.unwrap_or_else(OffsetDateTime::now_utc);
        let more = store::prune_expired(&pool.get().await?, now, idle_limit).await?;
        if !more {
            break;
        }
    }
    Ok(())
}

fn to_time(duration: Duration) -> time::Duration {
    time::Duration::try_from(duration).unwrap_or(time::Duration::MAX)
}

/// PostgreSQL keeps microseconds; truncating first makes a time read back equal the one returned.
fn to_stored_precision(time: OffsetDateTime) -> OffsetDateTime {
    time.replace_nanosecond(time.nanosecond() / 1000 * 1000)
        .unwrap_or(time)
}

fn whole_seconds(duration: time::Duration) -> u64 {
    u64::try_from(duration.whole_seconds()).unwrap_or(0)
}

impl Auth {
    /// The account as shown: `email_verified` only while verification is on.
    fn shown(&self, mut account: Account) -> Account {
        if self.config.email_verification == crate::config::EmailVerification::Off {
            account.email_verified = None;
        }
        account
    }
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

impl Auth {
    /// Connects, migrates, and makes sure the shared keys and secrets exist. Fails fast when the
    /// database is unreachable; the caller decides whether to retry.
    pub async fn init(config: Config) -> Result<Self, Error> {
        // Before any token is signed or verified: jsonwebtoken fixes its provider at first use.
        crate::es256::install();
        let pool = crate::db::create_pool(&config)?;
        crate::db::migrate(&config).await?;
        let hashing = HashingPool::new(config.max_concurrent_hashes, config.hash_queue)?;
        let refresh_secret = shared_secret(&pool, &config, REFRESH_SECRET_NAME).await?;
        let iterations = config.pbkdf2_iterations;
        let dummy_hash = password::hash_password(&hashing, DUMMY_PASSWORD, iterations).await?;
        let keys = SigningKeys::new(&config);
        keys.maintain(&pool, OffsetDateTime::now_utc()).await?;
        let housekeeping =
            tokio::spawn(keep_house(pool.clone(), to_time(config.session_idle))).abort_handle();
        let outbox = std::sync::Arc::new(email::Outbox::new(
            pool.clone(),
            crate::mail::Mailer::from_config(&config)?,
            config.key_encryption_key,
            config.public_url.clone(),
        ));
        let mail_worker = tokio::spawn(std::sync::Arc::clone(&outbox).run()).abort_handle();
        let session_checks = session_checks::SessionChecks::start(pool.clone());
        let mut metrics = crate::metrics::Metrics::default();
        metrics.register_derivations(hashing.derivations());
        Ok(Auth {
            config,
            pool,
            hashing,
            session_checks,
            metrics,
            keys,
            refresh_secret,
            dummy_hash,
            housekeeping,
            outbox,
            mail_worker,
        })
    }

    /// One pass of the pruning every instance does each minute in the background, at `now`.
    pub async fn housekeeping(&self, now: OffsetDateTime) -> Result<(), Error> {
        prune(&self.pool, to_time(self.config.session_idle), Some(now)).await
    }

    pub async fn jwks(&self, now: OffsetDateTime) -> Result<serde_json::Value, Error> {
        let ring = self.keys.fresh_ring(&self.pool, now).await?;
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

/// The named secret every instance shares, created (sealed when a key-encryption key is set) by
/// whichever instance needs it first.
async fn shared_secret(pool: &Pool, config: &Config, name: &str) -> Result<Vec<u8>, Error> {
    let kek = config.key_encryption_key;
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh)
        .map_err(|e| Error::internal("no randomness for a secret", e.to_string()))?;
    let (stored, encrypted) = crate::seal::protect(kek.as_ref(), name, &fresh)?;
    let db = pool.get().await?;
    store::insert_secret_if_absent(&db, name, &stored, encrypted, OffsetDateTime::now_utc())
        .await?;
    let (stored, encrypted) = store::read_secret(&db, name)
        .await?
        .ok_or_else(|| Error::internal("reading a shared secret", "it was not stored"))?;
    drop(db);
    crate::seal::unprotect(kek.as_ref(), name, stored, encrypted)
}
