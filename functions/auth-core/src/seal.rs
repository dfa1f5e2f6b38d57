//! Secrets at rest: AES-256-GCM under `AUTH_KEY_ENCRYPTION_KEY`, for the signing keys' private
//! halves and the shared refresh secret.

use crate::error::Error;

const NONCE_LEN: usize = 12;

/// AES-256-GCM under the key-encryption key: a random nonce followed by the ciphertext and tag.
/// `label` (the kid or the secret's name) is bound as associated data, so a sealed value cannot
/// be moved to another row.
pub fn seal(kek: &[u8; 32], label: &str, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, kek).map_err(|_| Error::internal("sealing", "bad key"))?,
    );
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)
        .map_err(|e| Error::internal("no randomness for a nonce", e.to_string()))?;
    let mut sealed = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(label.as_bytes()),
        &mut sealed,
    )
    .map_err(|_| Error::internal("sealing", "encryption failed"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

pub fn open(kek: &[u8; 32], label: &str, sealed: &[u8]) -> Result<Vec<u8>, Error> {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, kek).map_err(|_| Error::internal("opening", "bad key"))?,
    );
    if sealed.len() < NONCE_LEN {
        return Err(Error::internal("opening a sealed value", "too short"));
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| Error::internal("opening", "bad nonce"))?;
    let mut buffer = ciphertext.to_vec();
    let plaintext = key
        .open_in_place(nonce, Aad::from(label.as_bytes()), &mut buffer)
        .map_err(|_| {
            Error::internal(
                "opening a sealed value",
                "wrong AUTH_KEY_ENCRYPTION_KEY or corrupt data",
            )
        })?;
    Ok(plaintext.to_vec())
}

/// Seals `plaintext` when a key-encryption key is configured; returns the stored form and whether
/// it is sealed.
pub fn protect(
    kek: Option<&[u8; 32]>,
    label: &str,
    plaintext: &[u8],
) -> Result<(Vec<u8>, bool), Error> {
    match kek {
        Some(kek) => Ok((seal(kek, label, plaintext)?, true)),
        None => Ok((plaintext.to_vec(), false)),
    }
}

/// The inverse of [`protect`].
pub fn unprotect(
    kek: Option<&[u8; 32]>,
    label: &str,
    stored: Vec<u8>,
    encrypted: bool,
) -> Result<Vec<u8>, Error> {
    match (encrypted, kek) {
        (false, _) => Ok(stored),
        (true, Some(kek)) => open(kek, label, &stored),
        (true, None) => Err(Error::internal(
            "opening a sealed value",
            "it is encrypted but AUTH_KEY_ENCRYPTION_KEY is not set",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_label() {
        let kek = [7u8; 32];
        let sealed = seal(&kek, "kid-1", b"private key bytes").unwrap();
        assert!(!sealed.windows(17).any(|w| w == b"private key bytes"));
        assert_eq!(open(&kek, "kid-1", &sealed).unwrap(), b"private key bytes");
        assert!(open(&kek, "kid-2", &sealed).is_err());
        assert!(open(&[8u8; 32], "kid-1", &sealed).is_err());
        assert!(unprotect(None, "kid-1", sealed, true).is_err());
    }
}
