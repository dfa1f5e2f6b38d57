//! ES256 signing and verification on `ring` for `jsonwebtoken`.
//!
//! `jsonwebtoken`'s RustCrypto backend verifies a P-256 signature in about 160 µs here, `ring` in
//! about 40 µs; a token's first use on an instance (and every forged token, which is never
//! remembered) pays that. Signing was a quarter of the runtime threads' CPU in a login flood:
//! RustCrypto derives the public key from the private one for every token (the backend parses
//! the key per call) and then signs, both in portable field arithmetic, where `ring` does both
//! on its P-256 assembly. `ring` is already in the build (rustls runs on it), so the arm64
//! Lambda's cross build needs nothing new. Everything else (EdDSA, JWK helpers) stays with the
//! RustCrypto provider.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils, rust_crypto};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, UnparsedPublicKey,
};

/// The RustCrypto provider with ES256 signing and verification replaced.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: RUST_CRYPTO.rsa_pub_components_from_private_key,
        rsa_pub_components_from_public_key: RUST_CRYPTO.rsa_pub_components_from_public_key,
        ec_pub_components_from_private_key: RUST_CRYPTO.ec_pub_components_from_private_key,
        ed_pub_components_from_private_key: RUST_CRYPTO.ed_pub_components_from_private_key,
        compute_digest: RUST_CRYPTO.compute_digest,
    },
};
const RUST_CRYPTO: &KeyUtils = &rust_crypto::DEFAULT_PROVIDER.key_utils;

/// Makes [`PROVIDER`] the process's `jsonwebtoken` provider; later calls (and a provider already
/// installed by the embedding program) leave it as it is.
pub fn install() {
    let _ = PROVIDER.install_default();
}

fn new_signer(
    algorithm: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    match algorithm {
        Algorithm::ES256 => {
            let rng = SystemRandom::new();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.as_bytes(), &rng)
                    .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
            Ok(Box::new(Es256Signer { pair, rng }))
        }
        other => (rust_crypto::DEFAULT_PROVIDER.signer_factory)(other, key),
    }
}

/// The private key as `ring` holds it, with the randomness its nonces draw on.
struct Es256Signer {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl signature::Signer<Vec<u8>> for Es256Signer {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        self.pair
            .sign(&self.rng, message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for Es256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

fn new_verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    match algorithm {
        Algorithm::ES256 => Ok(Box::new(Es256Verifier(key.try_get_as_bytes()?.to_vec()))),
        other => (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(other, key),
    }
}

/// The public key as an uncompressed SEC1 point, as `DecodingKey` holds an EC key.
struct Es256Verifier(Vec<u8>);

impl signature::Verifier<Vec<u8>> for Es256Verifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.0)
            .verify(message, signature)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Es256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;

    /// Signatures made by the ring signer from a key as the service generates it (RustCrypto's
    /// PKCS#8), checked by both the ring verifier and RustCrypto's, and the other way round. The factories
    /// are called directly: installing the provider would depend on the order the tests run in.
    #[test]
    fn ring_and_rust_crypto_accept_each_others_es256_signatures() {
        let key = crate::token::generate_key(crate::config::SigningAlg::Es256).unwrap();
        let jwk: Jwk = serde_json::from_value(key.public_jwk.clone()).unwrap();
        let decoding = DecodingKey::from_jwk(&jwk).unwrap();
        let encoding = jsonwebtoken::EncodingKey::from_ec_der(&key.private_pkcs8);
        let message = b"header.claims";
        let ring_signer = new_signer(&Algorithm::ES256, &encoding).unwrap();
        assert_eq!(ring_signer.algorithm(), Algorithm::ES256);
        let rust_crypto_signer =
            (rust_crypto::DEFAULT_PROVIDER.signer_factory)(&Algorithm::ES256, &encoding).unwrap();
        let ring_verifier = new_verifier(&Algorithm::ES256, &decoding).unwrap();
        let rust_crypto_verifier =
            (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(&Algorithm::ES256, &decoding).unwrap();
        for signer in [&ring_signer, &rust_crypto_signer] {
            let signature = signer.try_sign(message).unwrap();
            assert_eq!(signature.len(), 64, "JWS wants r || s, not DER");
            for verifier in [&ring_verifier, &rust_crypto_verifier] {
                assert!(verifier.verify(message, &signature).is_ok());
                assert!(verifier.verify(b"header.claimz", &signature).is_err());
                let mut altered = signature.clone();
                altered[10] ^= 1;
                assert!(verifier.verify(message, &altered).is_err());
                assert!(verifier.verify(message, &signature[..63].to_vec()).is_err());
            }
        }
    }

    /// A key that is not a P-256 PKCS#8 document is refused with jsonwebtoken's own error.
    #[test]
    fn the_ring_signer_refuses_a_key_that_is_not_p256() {
        let ed = crate::token::generate_key(crate::config::SigningAlg::EdDsa).unwrap();
        let not_p256 = jsonwebtoken::EncodingKey::from_ec_der(&ed.private_pkcs8);
        let refused = new_signer(&Algorithm::ES256, &not_p256).err().unwrap();
        assert_eq!(refused.kind(), &ErrorKind::InvalidEcdsaKey);
    }
}
