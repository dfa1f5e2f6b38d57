//! `Idempotency-Key` on login and on what a signed-in session changes (its password, the
//! account's deletion, ending sessions). The key is recorded in the same transaction as the
//! request's effect, so a retry whose first answer was lost finds it exactly when the effect
//! happened, and gets the first answer instead of doing the work again (or failing on what the
//! first changed). Registration keeps its own record (`idempotency_keys`, with the account).
//!
//! Nothing stored is a secret: the key is kept as a SHA-256 (with the endpoint and the caller's
//! session, so one client's keys never meet another's), the request as an HMAC keyed with the
//! caller's access token, which the database never sees; a password in the body is therefore no
//! fast-hash oracle for whoever reads the table. A login's refresh token is not stored either: it
//! is derived from the shared refresh secret, the key and the password, so only a retry that
//! sends them again can have it.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Auth;
use crate::error::{Error, FieldErrors};
use crate::store::{self, KeptRequest, RequestClaim};
use crate::token::TokenSubject;

/// How long a key answers retries.
pub const KEY_KEPT: time::Duration = time::Duration::DAY;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The 422 for a key that cannot answer this request: it was used for another one, or (a login)
/// what it started has moved on.
pub(super) fn key_refused(reason: &str) -> Error {
    let mut errors = FieldErrors::new();
    errors.insert("Idempotency-Key", vec![reason.to_owned()]);
    Error::Validation(errors)
}

pub(super) const USED_FOR_ANOTHER: &str = "This key was used for a different request.";

/// The endpoint a registration's key is recorded for in `idempotency_keys`.
pub(super) const REGISTER_ENDPOINT: &str = "register";

/// Claims a registration's `Idempotency-Key` for the account `user_id` about to be created,
/// inside the registration's transaction (see [`store::claim_idempotency_key`]).
pub(super) async fn claim_registration_key(
    tx: &impl deadpool_postgres::GenericClient,
    key: &str,
    user_id: Uuid,
    now: OffsetDateTime,
) -> Result<store::KeyClaim, Error> {
    store::claim_idempotency_key(
        tx,
        &crate::token::sha256(key.as_bytes()),
        REGISTER_ENDPOINT,
        user_id,
        now,
        now - KEY_KEPT,
    )
    .await
}

/// A keyed request as the database records it.
#[derive(Clone, Copy)]
pub struct KeyedRequest {
    key_hash: [u8; 32],
    fingerprint: [u8; 32],
}

impl KeyedRequest {
    /// The first answer stands for a retry of the same request; another request gets 422.
    fn answer_as(&self, kept: &KeptRequest) -> Result<(), Error> {
        if bool::from(self.fingerprint.as_slice().ct_eq(&kept.fingerprint)) {
            Ok(())
        } else {
            Err(key_refused(USED_FOR_ANOTHER))
        }
    }
}

/// The caller of a signed-in request that changes something.
pub struct SignedInCaller {
    subject: TokenSubject,
    key: Option<CallerKey>,
}

struct CallerKey {
    key_hash: [u8; 32],
    /// Keyed with the caller's access token and fed the endpoint; the request's parts follow.
    mac: HmacSha256,
    /// The committed request that used the key, when this is a retry.
    kept: Option<KeptRequest>,
}

/// Length-prefixed, so that no two different lists of parts feed the same bytes.
fn feed(digest: &mut impl Mac, part: &[u8]) {
    digest.update(&(part.len() as u64).to_be_bytes());
    digest.update(part);
}

fn scoped_key_hash(endpoint: &str, scope: Uuid, key: &str) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in [
        endpoint.as_bytes(),
        scope.as_bytes().as_slice(),
        key.as_bytes(),
    ] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    digest.finalize().into()
}

/// Record `keyed` with the request's effect, as the first statement of its transaction. `true`:
/// a duplicate committed first; the caller rolls back and gives the first answer.
pub(super) async fn record_request(
    tx: &impl deadpool_postgres::GenericClient,
    keyed: Option<KeyedRequest>,
    now: OffsetDateTime,
) -> Result<bool, Error> {
    let Some(keyed) = keyed else {
        return Ok(false);
    };
    match store::claim_request(
        tx,
        &keyed.key_hash,
        &keyed.fingerprint,
        None,
        now,
        now - KEY_KEPT,
    )
    .await?
    {
        RequestClaim::Claimed => Ok(false),
        RequestClaim::Kept(kept) => keyed.answer_as(&kept).map(|()| true),
    }
}

impl Auth {
    /// Who makes a signed-in change. Without a key: a live session's access token, as ever.
    /// With one: first whether this session already made a request with that key within the
    /// day; its session may have ended since (an account deletion, a session ending itself), so
    /// only the token's signature is checked then. Otherwise the session must be alive.
    pub async fn signed_in_caller(
        &self,
        bearer: &str,
        key: Option<&str>,
        endpoint: &str,
        now: OffsetDateTime,
    ) -> Result<SignedInCaller, Error> {
        let Some(key) = key else {
            let subject = self.authenticate(bearer, now).await?;
            return Ok(SignedInCaller { subject, key: None });
        };
        let subject = self.verify_signature(bearer, now).await?;
        let key_hash = scoped_key_hash(endpoint, subject.session_id, key);
        let mut kept = self.kept_request(&key_hash, now).await?;
        if kept.is_none()
            && let Err(error) = self.require_live_session(subject, now).await
        {
            // A duplicate's first copy may have ended the session (deleted the account) between
            // the two reads: then its record is there now.
            kept = Some(self.kept_request(&key_hash, now).await?.ok_or(error)?);
        }
        let mut mac = HmacSha256::new_from_slice(bearer.as_bytes())
            .map_err(|e| Error::internal("request fingerprint", e.to_string()))?;
        mac.update(b"latchkey request v1\0");
        feed(&mut mac, endpoint.as_bytes());
        Ok(SignedInCaller {
            subject,
            key: Some(CallerKey {
                key_hash,
                mac,
                kept,
            }),
        })
    }

    async fn kept_request(
        &self,
        key_hash: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<Option<KeptRequest>, Error> {
        store::find_request(&self.pool.get().await?, key_hash, now - KEY_KEPT).await
    }

    /// Does `work` for `caller` at most once per key: a retry of the same request (`parts`: the
    /// path's and the body's values) gets the first answer, another request with the key 422.
    /// `work` records the key in its transaction with [`record_request`].
    pub async fn once<Fut>(
        &self,
        caller: SignedInCaller,
        parts: &[&[u8]],
        now: OffsetDateTime,
        work: impl FnOnce(TokenSubject, Option<KeyedRequest>) -> Fut,
    ) -> Result<(), Error>
    where
        Fut: Future<Output = Result<(), Error>>,
    {
        let Some(CallerKey {
            key_hash,
            mut mac,
            kept,
        }) = caller.key
        else {
            return work(caller.subject, None).await;
        };
        for part in parts {
            feed(&mut mac, part);
        }
        let keyed = KeyedRequest {
            key_hash,
            fingerprint: mac.finalize().into_bytes().into(),
        };
        if let Some(kept) = kept {
            return keyed.answer_as(&kept);
        }
        match work(caller.subject, Some(keyed)).await {
            Ok(()) => Ok(()),
            // A duplicate running beside the first can fail on what the first changed (the
            // password it checked is gone, the account too): once the first has committed, its
            // answer is the answer.
            Err(error) => match self.kept_request(&key_hash, now).await {
                Ok(Some(kept)) => keyed.answer_as(&kept),
                _ => Err(error),
            },
        }
    }
}

/// A login with a key.
#[derive(Clone, Copy)]
pub(super) struct KeyedLogin<'a> {
    pub key: &'a str,
    /// The password as checked (normalised).
    pub password: &'a str,
}

impl KeyedLogin<'_> {
    /// Logins share one key space (like registrations): the same key for another account is
    /// another request.
    pub fn key_hash(&self) -> [u8; 32] {
        scoped_key_hash("POST /api/v1/auth/login", Uuid::nil(), self.key)
    }

    pub fn fingerprint(user_id: Uuid) -> [u8; 32] {
        Sha256::new()
            .chain_update(b"latchkey login v1\0")
            .chain_update(user_id.as_bytes())
            .finalize()
            .into()
    }

    /// The first refresh token of the session this login starts: derived, not drawn, so that a
    /// retry can be given it again while nothing but its hash is stored. Whoever derives it
    /// must know the shared secret, the key and the password.
    pub fn first_refresh_token(&self, secret: &[u8], session_id: Uuid) -> Result<String, Error> {
        use base64::Engine as _;
        let mut mac = HmacSha256::new_from_slice(secret)
            .map_err(|e| Error::internal("refresh secret", e.to_string()))?;
        mac.update(b"latchkey keyed login v1\0");
        for part in [
            session_id.as_bytes().as_slice(),
            self.key.as_bytes(),
            self.password.as_bytes(),
        ] {
            feed(&mut mac, part);
        }
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// Whether a kept login is this account's.
    pub fn same_account(kept: &KeptRequest, user_id: Uuid) -> bool {
        bool::from(
            Self::fingerprint(user_id)
                .as_slice()
                .ct_eq(&kept.fingerprint),
        )
    }
}

/// The email endpoints' requests carry no session, so their keys are scoped by what the request
/// names instead: a link's token (a verification, a reset's confirmation) or nothing (a resend,
/// a reset request: one key space, as for logins).
fn anonymous_key_hash(endpoint: &str, scope: &[u8], key: &str) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(b"latchkey anonymous request v1\0");
    for part in [endpoint.as_bytes(), scope, key.as_bytes()] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    digest.finalize().into()
}

fn fingerprint(mac_key: &[u8], endpoint: &str, parts: &[&[u8]]) -> Result<[u8; 32], Error> {
    let mut mac = HmacSha256::new_from_slice(mac_key)
        .map_err(|e| Error::internal("request fingerprint", e.to_string()))?;
    mac.update(b"latchkey anonymous request v1\0");
    feed(&mut mac, endpoint.as_bytes());
    for part in parts {
        feed(&mut mac, part);
    }
    Ok(mac.finalize().into_bytes().into())
}

impl Auth {
    /// A keyed request that uses a mailed link: the key is scoped to the link (two clients never
    /// share a key space unless they share the link) and the fingerprint is an HMAC keyed with
    /// the link's token, which the database never holds (only its SHA-256, and not after its
    /// use), so a new password in `parts` cannot be guessed from the table at a hash's speed.
    pub(super) fn keyed_by_link(
        endpoint: &str,
        key: Option<&str>,
        link_token: &str,
        parts: &[&[u8]],
    ) -> Result<Option<KeyedRequest>, Error> {
        let Some(key) = key else {
            return Ok(None);
        };
        let scope = crate::token::sha256(link_token.as_bytes());
        Ok(Some(KeyedRequest {
            key_hash: anonymous_key_hash(endpoint, &scope, key),
            fingerprint: fingerprint(link_token.as_bytes(), endpoint, parts)?,
        }))
    }

    /// A keyed request that names an address (a resend, a reset request): the fingerprint is an
    /// HMAC under the shared refresh secret, so the table holds no plain hash of an address.
    pub(super) fn keyed_by_address(
        &self,
        endpoint: &str,
        key: Option<&str>,
        email: &str,
    ) -> Result<Option<KeyedRequest>, Error> {
        let Some(key) = key else {
            return Ok(None);
        };
        Ok(Some(KeyedRequest {
            key_hash: anonymous_key_hash(endpoint, &[], key),
            fingerprint: fingerprint(&self.refresh_secret, endpoint, &[email.as_bytes()])?,
        }))
    }

    /// Whether a keyed request was already answered: `Ok(true)` for a retry of it (its answer
    /// stands), 422 for another request that used the key, `Ok(false)` for a first request.
    /// Checked before any limit is counted, so a retry never runs into one the first used up.
    pub(super) async fn answered_before(
        &self,
        keyed: Option<&KeyedRequest>,
        now: OffsetDateTime,
    ) -> Result<bool, Error> {
        let Some(keyed) = keyed else {
            return Ok(false);
        };
        match self.kept_request(&keyed.key_hash, now).await? {
            Some(kept) => keyed.answer_as(&kept).map(|()| true),
            None => Ok(false),
        }
    }

    /// The outcome of a keyed request's work: an error is replaced by the first answer when a
    /// duplicate running beside it committed (it took the link this one then found gone).
    pub(super) async fn unless_answered(
        &self,
        keyed: Option<KeyedRequest>,
        now: OffsetDateTime,
        outcome: Result<(), Error>,
    ) -> Result<(), Error> {
        match (outcome, keyed) {
            (Err(error), Some(keyed)) => match self.kept_request(&keyed.key_hash, now).await {
                Ok(Some(kept)) => keyed.answer_as(&kept),
                _ => Err(error),
            },
            (outcome, _) => outcome,
        }
    }
}
