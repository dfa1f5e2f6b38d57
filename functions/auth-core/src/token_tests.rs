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
        assert_eq!(verified.user_id, subject.user_id);
        assert_eq!(verified.session_id, subject.session_id);
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
