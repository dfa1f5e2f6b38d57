//! ES256 verification on `ring` for `jsonwebtoken`.
//!
//! `jsonwebtoken`'s RustCrypto backend verifies a P-256 signature in about 160 µs here, `ring` in
//! about 40 µs; a token's first use on an instance (and every forged token, which is never
//! remembered) pays that. `ring` is already in the build (rustls runs on it), so the arm64
//! Lambda's cross build needs nothing new. Everything else (signing, EdDSA, JWK helpers) stays
//! with the RustCrypto provider.

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, KeyUtils, rust_crypto};
use jsonwebtoken::{Algorithm, DecodingKey};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

/// The RustCrypto provider with ES256 verification replaced.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: |algorithm, key| (rust_crypto::DEFAULT_PROVIDER.signer_factory)(algorithm, key),
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

    /// A token signed by the service's own signing path, checked by the ring verifier directly
    /// (installing the provider would depend on the order the tests run in).
    #[test]
    fn ring_accepts_our_signatures_and_refuses_altered_ones() {
        let key = crate::token::generate_key(crate::config::SigningAlg::Es256).unwrap();
        let jwk: Jwk = serde_json::from_value(key.public_jwk.clone()).unwrap();
        let decoding = DecodingKey::from_jwk(&jwk).unwrap();
        let encoding = jsonwebtoken::EncodingKey::from_ec_der(&key.private_pkcs8);
        let message = b"header.claims";
        let signed = jsonwebtoken::crypto::sign(message, &encoding, Algorithm::ES256).unwrap();
        let signature =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signed)
                .unwrap();
        let verifier = new_verifier(&Algorithm::ES256, &decoding).unwrap();
        assert_eq!(verifier.algorithm(), Algorithm::ES256);
        assert!(verifier.verify(message, &signature).is_ok());
        assert!(verifier.verify(b"header.claimz", &signature).is_err());
        let mut altered = signature.clone();
        altered[10] ^= 1;
        assert!(verifier.verify(message, &altered).is_err());
        assert!(verifier.verify(message, &signature[..63].to_vec()).is_err());
    }
}
