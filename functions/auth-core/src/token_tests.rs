//! Unit tests of `token.rs`, kept beside it so that the module reads as one piece.
use super::*;

fn ring_with(alg: SigningAlg) -> KeyRing {
    let key = generate_key(alg).unwrap();
    KeyRing::new(
        vec![StoredKey {
            kid: key.kid,
            alg: key.alg,
            private_key: Some(key.private_pkcs8),
            encrypted: false,
            public_jwk: key.public_jwk,
            signs_from: OffsetDateTime::UNIX_EPOCH,
        }],
        None,
    )
    .unwrap()
}

fn settings(alg: SigningAlg) -> AccessTokenSettings<'static> {
    AccessTokenSettings {
        alg,
        issuer: "http://localhost:8080",
        audience: "latchkey",
        ttl: Duration::from_secs(900),
    }
}

#[test]
fn issued_tokens_verify_for_both_algorithms() {
    for alg in [SigningAlg::Es256, SigningAlg::EdDsa] {
        let ring = ring_with(alg);
        let subject = TokenSubject {
            user_id: Uuid::now_v7(),
            session_id: Uuid::now_v7(),
        };
        let now = OffsetDateTime::now_utc();
        let token = issue_access_token(&ring, &settings(alg), subject, None, now).unwrap();
        let verified = verify_access_token(&ring, &settings(alg), &token, now).unwrap();
        assert_eq!(verified.subject.user_id, subject.user_id);
        assert_eq!(verified.subject.session_id, subject.session_id);
    }
}

#[test]
fn a_token_of_the_other_algorithm_is_refused() {
    let ring = ring_with(SigningAlg::EdDsa);
    let subject = TokenSubject {
        user_id: Uuid::now_v7(),
        session_id: Uuid::now_v7(),
    };
    let now = OffsetDateTime::now_utc();
    let token =
        issue_access_token(&ring, &settings(SigningAlg::EdDsa), subject, None, now).unwrap();
    assert!(verify_access_token(&ring, &settings(SigningAlg::Es256), &token, now).is_err());
}

#[test]
fn a_remembered_token_is_refused_once_expired_or_its_key_is_unknown() {
    let ring = ring_with(SigningAlg::Es256);
    let settings = settings(SigningAlg::Es256);
    let subject = TokenSubject {
        user_id: Uuid::now_v7(),
        session_id: Uuid::now_v7(),
    };
    let now = OffsetDateTime::now_utc();
    let token = issue_access_token(&ring, &settings, subject, None, now).unwrap();
    let verified = verify_access_token(&ring, &settings, &token, now).unwrap();
    assert!(verified.recheck(&ring, &settings, now).is_ok());
    let after_expiry = now + time::Duration::seconds(900 + LEEWAY_SECS as i64 + 1);
    assert_eq!(
        verified
            .recheck(&ring, &settings, after_expiry)
            .unwrap_err(),
        verify_access_token(&ring, &settings, &token, after_expiry).unwrap_err()
    );
    assert_eq!(
        verified
            .recheck(&KeyRing::empty(), &settings, now)
            .unwrap_err(),
        Rejection::UnknownKey
    );
}

#[test]
fn remembered_tokens_stay_bounded_and_expired_ones_go_first() {
    let now = OffsetDateTime::now_utc();
    let mut next = 0u8;
    // A token verified at `issued`, as `verify_access_token` would have returned it.
    let mut remembered = |issued: OffsetDateTime| {
        next += 1;
        let verified = VerifiedToken {
            subject: TokenSubject {
                user_id: Uuid::now_v7(),
                session_id: Uuid::now_v7(),
            },
            kid: "kid".into(),
            iat: issued.unix_timestamp(),
            exp: issued.unix_timestamp() + 900,
        };
        (sha256(&[next]), verified)
    };
    let cache = VerifiedTokens::new(4);
    let an_hour_ago = now - time::Duration::HOUR;
    for _ in 0..2 {
        let (digest, verified) = remembered(an_hour_ago);
        cache.insert(digest, verified, an_hour_ago);
    }
    let (live, verified) = remembered(now);
    cache.insert(live, verified, now);
    let (other, verified) = remembered(now);
    cache.insert(other, verified, now);
    assert_eq!(cache.len(), 4);
    // Full: the two expired entries make room, the live ones stay.
    let (newest, verified) = remembered(now);
    cache.insert(newest, verified, now);
    assert_eq!(cache.len(), 3);
    assert!(cache.get(&live).is_some() && cache.get(&newest).is_some());
    for _ in 0..10 {
        let (digest, verified) = remembered(now);
        cache.insert(digest, verified, now);
        assert!(!cache.is_empty() && cache.len() <= 4);
    }
}

#[test]
fn successors_are_deterministic_per_secret_and_token() {
    let token = new_refresh_token().unwrap();
    assert!(looks_like_refresh_token(&token));
    let first = successor_refresh_token(b"secret one", &token).unwrap();
    assert_eq!(
        first,
        successor_refresh_token(b"secret one", &token).unwrap()
    );
    assert_ne!(
        first,
        successor_refresh_token(b"secret two", &token).unwrap()
    );
    assert!(looks_like_refresh_token(&first));
    assert_ne!(refresh_token_hash(&token), refresh_token_hash(&first));
}
