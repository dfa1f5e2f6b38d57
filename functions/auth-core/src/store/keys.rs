//! Signing keys, the secrets the instances share, and the migration history.

use super::cached;
use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use crate::config::SigningAlg;
use crate::error::Error;
use crate::token::{NewKey, StoredKey, parse_alg};

/// Names the lock that lets exactly one instance at a time change the signing schedule.
const KEY_LOCK: i64 = 0x6c61_7463_6b65_7973; // "latckeys"

/// Holds the schedule lock until the caller's transaction ends: however many instances race to
/// add a key, each decides after seeing the others' keys.
pub async fn lock_key_schedule(tx: &impl GenericClient) -> Result<(), Error> {
    cached::execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&KEY_LOCK]).await?;
    Ok(())
}

/// When each stored key starts signing, ordered by that time.
pub struct KeyScheduleEntry {
    pub alg: SigningAlg,
    pub signs_from: OffsetDateTime,
}

fn stored_alg(text: &str) -> Result<SigningAlg, Error> {
    parse_alg(text).ok_or_else(|| Error::internal("stored key", "unknown algorithm"))
}

pub async fn key_schedule(db: &impl GenericClient) -> Result<Vec<KeyScheduleEntry>, Error> {
    let rows = cached::query(
        db,
        "SELECT alg, signs_from FROM signing_keys ORDER BY signs_from",
        &[],
    )
    .await?;
    rows.iter()
        .map(|row| {
            let alg: String = row.try_get(0)?;
            Ok(KeyScheduleEntry {
                alg: stored_alg(&alg)?,
                signs_from: row.try_get(1)?,
            })
        })
        .collect()
}

/// Stores a new key; `private_key` is already in its stored form (sealed when `encrypted`).
pub async fn insert_key(
    db: &impl GenericClient,
    key: &NewKey,
    private_key: &[u8],
    encrypted: bool,
    signs_from: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), Error> {
    cached::execute(db,
        "INSERT INTO signing_keys (kid, alg, public_jwk, private_key, encrypted, created_at, signs_from) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &key.kid,
            &key.alg.as_str(),
            &key.public_jwk,
            &private_key,
            &encrypted,
            &now,
            &signs_from,
        ],
    )
    .await?;
    Ok(())
}

pub async fn load_keys(db: &impl GenericClient) -> Result<Vec<StoredKey>, Error> {
    let rows = cached::query(db,
            "SELECT kid, alg, public_jwk, private_key, encrypted, signs_from FROM signing_keys ORDER BY signs_from",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let alg: String = row.try_get("alg")?;
            Ok(StoredKey {
                kid: row.try_get("kid")?,
                alg: stored_alg(&alg)?,
                public_jwk: row.try_get("public_jwk")?,
                private_key: row.try_get("private_key")?,
                encrypted: row.try_get("encrypted")?,
                signs_from: row.try_get("signs_from")?,
            })
        })
        .collect()
}

/// Wipes the private half of retired keys; their public half stays for the record.
pub async fn wipe_private_keys(tx: &impl GenericClient, kids: &[String]) -> Result<(), Error> {
    cached::execute(tx,
        "UPDATE signing_keys SET private_key = NULL WHERE kid = ANY($1) AND private_key IS NOT NULL",
        &[&kids],
    )
    .await?;
    Ok(())
}

/// Stores a secret unless an instance already has; [`read_secret`] then returns the one that won.
pub async fn insert_secret_if_absent(
    db: &impl GenericClient,
    name: &str,
    value: &[u8],
    encrypted: bool,
    now: OffsetDateTime,
) -> Result<(), Error> {
    cached::execute(
        db,
        "INSERT INTO service_secrets (name, value, encrypted, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO NOTHING",
        &[&name, &value, &encrypted, &now],
    )
    .await?;
    Ok(())
}

/// The stored form of a secret and whether it is sealed.
pub async fn read_secret(
    db: &impl GenericClient,
    name: &str,
) -> Result<Option<(Vec<u8>, bool)>, Error> {
    let row = cached::query_opt(
        db,
        "SELECT value, encrypted FROM service_secrets WHERE name = $1",
        &[&name],
    )
    .await?;
    row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .transpose()
}

/// The newest applied migration, or `None` before the history table exists.
pub async fn applied_migration_version(db: &impl GenericClient) -> Result<Option<i64>, Error> {
    let exists: bool = cached::query_one(
        db,
        "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
        &[],
    )
    .await?
    .try_get(0)?;
    if !exists {
        return Ok(None);
    }
    let row = cached::query_one(
        db,
        "SELECT max(version)::int8 FROM refinery_schema_history",
        &[],
    )
    .await?;
    Ok(row.try_get(0)?)
}
