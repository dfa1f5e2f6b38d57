//! Access tokens (JWTs signed with keys kept in PostgreSQL), the JWKS, and opaque refresh tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::pkcs8::EncodePrivateKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::SigningAlg;
use crate::error::Error;

/// Clock skew allowed when checking `exp` and `iat`, from the contract.
pub const LEEWAY_SECS: u64 = 30;
/// Compact JWTs we issue are well under 1 KiB; anything far larger is not ours.
const MAX_ACCESS_TOKEN_LEN: usize = 4096;
const REFRESH_TOKEN_BYTES: usize = 32;
/// Length of a base64url-encoded 32-byte refresh token.
pub const REFRESH_TOKEN_LEN: usize = 43;
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// PKCS#8 v1 prefix for an Ed25519 private key; the 32-byte seed follows it. jsonwebtoken's JWK
/// helper accepts only this short form.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

fn jwt_algorithm(alg: SigningAlg) -> Algorithm {
    match alg {
        SigningAlg::Es256 => Algorithm::ES256,
        SigningAlg::EdDsa => Algorithm::EdDSA,
    }
}

pub fn parse_alg(text: &str) -> Option<SigningAlg> {
    match text {
        "ES256" => Some(SigningAlg::Es256),
        "EdDSA" => Some(SigningAlg::EdDsa),
        _ => None,
    }
}

/// A freshly generated key pair, ready to be stored.
pub struct NewKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub private_pkcs8: Vec<u8>,
    pub public_jwk: serde_json::Value,
}

/// Generates a signing key; its `kid` is the RFC 7638 thumbprint of the public key.
pub fn generate_key(alg: SigningAlg) -> Result<NewKey, Error> {
    let private_pkcs8 = loop {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::internal("no randomness for a key", e.to_string()))?;
        match alg {
            SigningAlg::Es256 => {
                // A seed outside the curve order (odds about 2^-128) is simply drawn again.
                if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&seed) {
                    let der = key
                        .to_pkcs8_der()
                        .map_err(|e| Error::internal("encoding a new key", e.to_string()))?;
                    break der.as_bytes().to_vec();
                }
            }
            SigningAlg::EdDsa => {
                let mut der = ED25519_PKCS8_V1_PREFIX.to_vec();
                der.extend_from_slice(&seed);
                break der;
            }
        }
    };
    let encoding = encoding_key(alg, &private_pkcs8);
    let mut jwk = Jwk::from_encoding_key(&encoding, jwt_algorithm(alg))
        .map_err(|e| Error::internal("deriving a public key", e))?;
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| Error::internal("key thumbprint", e))?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let public_jwk =
        serde_json::to_value(&jwk).map_err(|e| Error::internal("serialising a JWK", e))?;
    Ok(NewKey {
        kid,
        alg,
        private_pkcs8,
        public_jwk,
    })
}

fn encoding_key(alg: SigningAlg, pkcs8: &[u8]) -> EncodingKey {
    match alg {
        SigningAlg::Es256 => EncodingKey::from_ec_der(pkcs8),
        SigningAlg::EdDsa => EncodingKey::from_ed_der(pkcs8),
    }
}

/// A key as loaded from the database; `private_key` is sealed when `encrypted`, and gone once
/// the key is retired.
pub struct StoredKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub private_key: Option<Vec<u8>>,
    pub encrypted: bool,
    pub public_jwk: serde_json::Value,
    pub signs_from: OffsetDateTime,
}

#[derive(Clone)]
struct LoadedKey {
    kid: String,
    alg: SigningAlg,
    /// `None` once the key is retired and its private half wiped.
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    public_jwk: serde_json::Value,
    signs_from: OffsetDateTime,
}

/// Every key this service knows, ordered by when each starts signing.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<LoadedKey>,
    by_kid: HashMap<String, usize>,
    pub loaded_at: std::time::Instant,
}

impl KeyRing {
    pub fn empty() -> Self {
        KeyRing {
            keys: Vec::new(),
            by_kid: HashMap::new(),
            loaded_at: std::time::Instant::now(),
        }
    }

    pub fn new(mut stored: Vec<StoredKey>, kek: Option<&[u8; 32]>) -> Result<Self, Error> {
        stored.sort_by_key(|key| key.signs_from);
        let mut keys = Vec::with_capacity(stored.len());
        for key in stored {
            let encoding = match key.private_key {
                Some(sealed) => {
                    let private_pkcs8 =
                        crate::seal::unprotect(kek, &key.kid, sealed, key.encrypted)?;
                    Some(encoding_key(key.alg, &private_pkcs8))
                }
                None => None,
            };
            let jwk: Jwk = serde_json::from_value(key.public_jwk.clone())
                .map_err(|e| Error::internal("stored public key", e))?;
            let decoding =
                DecodingKey::from_jwk(&jwk).map_err(|e| Error::internal("stored public key", e))?;
            keys.push(LoadedKey {
                encoding,
                decoding,
                kid: key.kid,
                alg: key.alg,
                public_jwk: key.public_jwk,
                signs_from: key.signs_from,
            });
        }
        let by_kid = keys
            .iter()
            .enumerate()
            .map(|(i, key)| (key.kid.clone(), i))
            .collect();
        Ok(KeyRing {
            keys,
            by_kid,
            loaded_at: std::time::Instant::now(),
        })
    }

    /// The newest key of `alg` that may sign at `now`.
    fn signing_key(&self, alg: SigningAlg, now: OffsetDateTime) -> Option<&LoadedKey> {
        self.keys
            .iter()
            .rev()
            .find(|key| key.alg == alg && key.signs_from <= now)
    }

    /// When the key at `index` is retired: once its successor has signed for longer than any
    /// token lives (plus the clock leeway), no valid token can carry it. `None` while it is the
    /// newest key of its algorithm.
    fn retired_at(&self, index: usize, access_ttl: Duration) -> Option<OffsetDateTime> {
        let key = &self.keys[index];
        let still_valid_for =
            time::Duration::try_from(access_ttl + Duration::from_secs(LEEWAY_SECS))
                .unwrap_or(time::Duration::DAY);
        self.keys[index + 1..]
            .iter()
            .find(|later| later.alg == key.alg)
            .map(|later| later.signs_from + still_valid_for)
    }

    fn is_retired(&self, index: usize, now: OffsetDateTime, access_ttl: Duration) -> bool {
        self.retired_at(index, access_ttl)
            .is_some_and(|retired_at| retired_at <= now)
    }

    /// Drops the private half of the named keys from memory, as it was from the database.
    pub fn forget_private_halves(&mut self, kids: &[String]) {
        for key in &mut self.keys {
            if kids.contains(&key.kid) {
                key.encoding = None;
            }
        }
    }

    /// The keys retired at `now` whose private half is still loaded: to be wiped from the
    /// database, so that no copy of it (an old backup) can mint a token again.
    pub fn retired_with_private_half(
        &self,
        now: OffsetDateTime,
        access_ttl: Duration,
    ) -> Vec<String> {
        (0..self.keys.len())
            .filter(|&index| {
                self.keys[index].encoding.is_some() && self.is_retired(index, now, access_ttl)
            })
            .map(|index| self.keys[index].kid.clone())
            .collect()
    }

    pub fn can_sign(&self, alg: SigningAlg, now: OffsetDateTime) -> bool {
        self.signing_key(alg, now).is_some()
    }

    /// The public keys a verifier needs at `now`: each key that signed a token that may still be
    /// valid, the key signing now, and the next key, published before it signs anything.
    pub fn jwks(&self, now: OffsetDateTime, access_ttl: Duration) -> serde_json::Value {
        let keys: Vec<&serde_json::Value> = (0..self.keys.len())
            .filter(|&index| !self.is_retired(index, now, access_ttl))
            .map(|index| &self.keys[index].public_jwk)
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub sid: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    /// Whether the account's email was verified when the token was issued; absent while
    /// verification is off (AUTH_EMAIL_VERIFICATION).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

/// Who an accepted access token speaks for.
#[derive(Clone, Copy, Debug)]
pub struct TokenSubject {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

pub struct AccessTokenSettings<'a> {
    pub alg: SigningAlg,
    pub issuer: &'a str,
    pub audience: &'a str,
    pub ttl: Duration,
}

pub fn issue_access_token(
    ring: &KeyRing,
    settings: &AccessTokenSettings<'_>,
    subject: TokenSubject,
    email_verified: Option<bool>,
    now: OffsetDateTime,
) -> Result<String, Error> {
    let key = ring
        .signing_key(settings.alg, now)
        .ok_or_else(|| Error::internal("signing", "no signing key is active"))?;
    let iat = now.unix_timestamp();
    let claims = AccessClaims {
        iss: settings.issuer.to_owned(),
        aud: settings.audience.to_owned(),
        sub: subject.user_id.to_string(),
        sid: subject.session_id.to_string(),
        jti: Uuid::now_v7().to_string(),
        iat,
        exp: iat.saturating_add(i64::try_from(settings.ttl.as_secs()).unwrap_or(i64::MAX)),
        email_verified,
    };
    let mut header = Header::new(jwt_algorithm(key.alg));
    header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
    header.kid = Some(key.kid.clone());
    let encoding = key
        .encoding
        .as_ref()
        .ok_or_else(|| Error::internal("signing", "the signing key's private half is gone"))?;
    jsonwebtoken::encode(&header, &claims, encoding).map_err(|e| Error::internal("signing", e))
}

/// Why a token was refused, before the session check. `UnknownKey` lets the caller reload the
/// key ring once, since another instance may have just published a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    UnknownKey,
    Invalid(&'static str),
}

/// An access token whose signature and claims have been checked, with what the cheap checks that
/// can change over time need: its key and its validity window.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    pub subject: TokenSubject,
    kid: Arc<str>,
    iat: i64,
    exp: i64,
}

impl VerifiedToken {
    /// The checks that depend on the time and on the key ring, again, for a token verified
    /// before: its key must still be known and not retired, and the token must not have expired.
    pub fn recheck(
        &self,
        ring: &KeyRing,
        settings: &AccessTokenSettings<'_>,
        now: OffsetDateTime,
    ) -> Result<TokenSubject, Rejection> {
        usable_key(ring, settings, &self.kid, now)?;
        check_times(self.iat, self.exp, now)?;
        Ok(self.subject)
    }
}

/// The key named `kid`, while it may verify tokens at `now`.
fn usable_key<'r>(
    ring: &'r KeyRing,
    settings: &AccessTokenSettings<'_>,
    kid: &str,
    now: OffsetDateTime,
) -> Result<&'r LoadedKey, Rejection> {
    let index = *ring.by_kid.get(kid).ok_or(Rejection::UnknownKey)?;
    let key = &ring.keys[index];
    if key.alg != settings.alg {
        return Err(Rejection::Invalid("algorithm not allowed"));
    }
    // What the JWKS no longer publishes verifies nothing here either.
    if ring.is_retired(index, now, settings.ttl) {
        return Err(Rejection::Invalid("retired key"));
    }
    Ok(key)
}

fn check_times(iat: i64, exp: i64, now: OffsetDateTime) -> Result<(), Rejection> {
    let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
    if iat > now.unix_timestamp() + leeway || exp <= iat {
        return Err(Rejection::Invalid("issued in the future"));
    }
    if exp + leeway < now.unix_timestamp() {
        return Err(Rejection::Invalid("expired"));
    }
    Ok(())
}

/// Verifies an access token's header, signature and claims. Only our own token shape passes:
/// the configured algorithm, `typ` `at+jwt`, a known `kid`, and no key material in the header.
pub fn verify_access_token(
    ring: &KeyRing,
    settings: &AccessTokenSettings<'_>,
    token: &str,
    now: OffsetDateTime,
) -> Result<VerifiedToken, Rejection> {
    if token.len() > MAX_ACCESS_TOKEN_LEN || token.split('.').count() != 3 {
        return Err(Rejection::Invalid("malformed"));
    }
    let header =
        jsonwebtoken::decode_header(token).map_err(|_| Rejection::Invalid("bad header"))?;
    if header.alg != jwt_algorithm(settings.alg) {
        return Err(Rejection::Invalid("algorithm not allowed"));
    }
    if !header.typ.as_deref().is_some_and(|typ| {
        typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
            || typ.eq_ignore_ascii_case("application/at+jwt")
    }) {
        return Err(Rejection::Invalid("wrong typ"));
    }
    // We never put key material or key locations in a header; a token that does is forged.
    if header.jwk.is_some()
        || header.jku.is_some()
        || header.x5u.is_some()
        || header.x5c.is_some()
        || header.crit.is_some()
    {
        return Err(Rejection::Invalid("key material in header"));
    }
    let kid = header.kid.ok_or(Rejection::Invalid("no kid"))?;
    let key = usable_key(ring, settings, &kid, now)?;
    let mut validation = Validation::new(jwt_algorithm(settings.alg));
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_audience(&[settings.audience]);
    validation.set_issuer(&[settings.issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
        .map_err(|_| Rejection::Invalid("signature or claims"))?;
    let claims = data.claims;
    check_times(claims.iat, claims.exp, now)?;
    if claims.jti.is_empty() || claims.jti.len() > 64 {
        return Err(Rejection::Invalid("bad jti"));
    }
    let user_id = Uuid::parse_str(&claims.sub).map_err(|_| Rejection::Invalid("bad sub"))?;
    let session_id = Uuid::parse_str(&claims.sid).map_err(|_| Rejection::Invalid("bad sid"))?;
    Ok(VerifiedToken {
        subject: TokenSubject {
            user_id,
            session_id,
        },
        kid: kid.into(),
        iat: claims.iat,
        exp: claims.exp,
    })
}

/// Access tokens this instance has verified, keyed by the SHA-256 of the whole token, so that a
/// token presented again (every signed-in request of a session presents the same one for its
/// lifetime) skips the ECDSA verification, the bulk of a request's CPU. A hit still re-runs the
/// checks that change with time ([`VerifiedToken::recheck`]), and nothing here replaces the
/// session check against the database: revocation stays immediate. Bounded: when full, expired
/// entries go, then everything if that was not enough.
pub struct VerifiedTokens {
    entries: Mutex<HashMap<[u8; 32], VerifiedToken>>,
    capacity: usize,
}

impl VerifiedTokens {
    pub fn new(capacity: usize) -> Self {
        VerifiedTokens {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], VerifiedToken>> {
        // Nothing can panic while the lock is held; a poisoned map is still a consistent one.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, digest: &[u8; 32]) -> Option<VerifiedToken> {
        self.entries().get(digest).cloned()
    }

    pub fn insert(&self, digest: [u8; 32], token: VerifiedToken, now: OffsetDateTime) {
        let mut entries = self.entries();
        if entries.len() >= self.capacity {
            let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
            entries.retain(|_, cached| cached.exp + leeway >= now.unix_timestamp());
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(digest, token);
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A new random refresh token.
pub fn new_refresh_token() -> Result<String, Error> {
    let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::internal("no randomness for a token", e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The token that replaces `token` on rotation. Deriving it (keyed with a secret only the
/// instances share) instead of drawing it lets every instance hand concurrent refreshes of one
/// token the same successor, while the database keeps nothing but hashes.
pub fn successor_refresh_token(secret: &[u8], token: &str) -> Result<String, Error> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|e| Error::internal("refresh secret", e.to_string()))?;
    mac.update(b"latchkey refresh successor v1\0");
    mac.update(token.as_bytes());
    Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// What the database stores in place of a refresh token.
pub fn refresh_token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Shape check before any database work: our refresh tokens are 43 base64url characters.
pub fn looks_like_refresh_token(token: &str) -> bool {
    token.len() == REFRESH_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
