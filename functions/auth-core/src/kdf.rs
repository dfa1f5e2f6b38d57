//! PBKDF2-HMAC-SHA256 close to the hardware bound.
//!
//! Each iteration of PBKDF2 is one HMAC over a 32-byte message, which is two SHA-256 compressions
//! of a single block whose padding never changes. The generic `pbkdf2` crate re-runs the HMAC
//! machinery (buffering, padding, finalisation) every iteration; here the keyed inner and outer
//! states are computed once, the padding is written once, and each iteration is exactly two calls
//! to SHA-256's compression function, with no allocation. Its output equals the `pbkdf2` crate's,
//! which the tests check on the published vectors and on thousands of random inputs.

use hmac::{KeyInit, Mac};
use sha2::block_api::compress256;
use sha2::{Digest, Sha256};

const BLOCK: usize = 64;
const DIGEST: usize = 32;
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// A single block holding a 32-byte message after one already-hashed 64-byte block (the HMAC
/// key pad): the message, the 0x80 marker, zeros, and the length of 96 bytes in bits.
fn padded_block() -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    block[DIGEST] = 0x80;
    block[BLOCK - 8..].copy_from_slice(&(((BLOCK + DIGEST) * 8) as u64).to_be_bytes());
    block
}

fn write_state(state: &[u32; 8], out: &mut [u8]) {
    for (word, bytes) in state.iter().zip(out.chunks_exact_mut(4)) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
}

/// The SHA-256 states after absorbing the key XOR the inner and the outer pad.
fn keyed_states(password: &[u8]) -> ([u32; 8], [u32; 8]) {
    let mut key = [0u8; BLOCK];
    if password.len() > BLOCK {
        key[..DIGEST].copy_from_slice(&Sha256::digest(password));
    } else {
        key[..password.len()].copy_from_slice(password);
    }
    let mut inner_pad = [0x36u8; BLOCK];
    let mut outer_pad = [0x5cu8; BLOCK];
    for ((i, o), k) in inner_pad
        .iter_mut()
        .zip(outer_pad.iter_mut())
        .zip(key.iter())
    {
        *i ^= k;
        *o ^= k;
    }
    let (mut inner, mut outer) = (IV, IV);
    compress256(&mut inner, &[inner_pad]);
    compress256(&mut outer, &[outer_pad]);
    (inner, outer)
}

/// Derives `out.len()` bytes from `password` and `salt` with `iterations` rounds.
pub fn pbkdf2_hmac_sha256(password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    let (inner, outer) = keyed_states(password);
    let mut block = padded_block();
    for (index, chunk) in out.chunks_mut(DIGEST).enumerate() {
        // U1 = HMAC(password, salt || INT(i)): any salt length, so through the general HMAC once.
        let Ok(mut first) = hmac::Hmac::<Sha256>::new_from_slice(password) else {
            return; // HMAC takes keys of any length; this branch cannot be reached.
        };
        first.update(salt);
        first.update(&u32::try_from(index + 1).unwrap_or(u32::MAX).to_be_bytes());
        let mut u = [0u8; DIGEST];
        u.copy_from_slice(&first.finalize().into_bytes());
        let mut t = u;
        for _ in 1..iterations {
            block[..DIGEST].copy_from_slice(&u);
            let mut state = inner;
            compress256(&mut state, &[block]);
            write_state(&state, &mut block[..DIGEST]);
            let mut state = outer;
            compress256(&mut state, &[block]);
            write_state(&state, &mut u);
            for (acc, byte) in t.iter_mut().zip(u.iter()) {
                *acc ^= byte;
            }
        }
        chunk.copy_from_slice(&t[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn derive(password: &[u8], salt: &[u8], iterations: u32, len: usize) -> String {
        let mut out = vec![0u8; len];
        pbkdf2_hmac_sha256(password, salt, iterations, &mut out);
        out.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn published_vectors() {
        // RFC 7914, section 11.
        assert_eq!(
            derive(b"passwd", b"salt", 1, 64),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
        );
        assert_eq!(
            derive(b"Password", b"NaCl", 80000, 64),
            "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d"
        );
        // The RFC 6070 inputs with SHA-256.
        assert_eq!(
            derive(b"password", b"salt", 1, 32),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
        assert_eq!(
            derive(b"password", b"salt", 2, 32),
            "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"
        );
        assert_eq!(
            derive(b"password", b"salt", 4096, 32),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
        assert_eq!(
            derive(
                b"passwordPASSWORDpassword",
                b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
                4096,
                40
            ),
            "348c89dbcbd32b2f32d814b8116e84cf2b17347ebc1800181c4e2a1fb8dd53e1c635518c7dac47e9"
        );
        assert_eq!(
            derive(b"pass\0word", b"sa\0lt", 4096, 16),
            "89b69d0516f829893c696226650a8687"
        );
    }

    #[test]
    fn long_passwords_and_salts_match_the_reference() {
        for (password_len, salt_len) in [(63, 16), (64, 16), (65, 16), (200, 300), (1000, 1)] {
            let password = vec![b'p'; password_len];
            let salt = vec![b's'; salt_len];
            let mut expected = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(&password, &salt, 1000, &mut expected);
            let mut ours = [0u8; 32];
            pbkdf2_hmac_sha256(&password, &salt, 1000, &mut ours);
            assert_eq!(
                ours, expected,
                "password {password_len} bytes, salt {salt_len} bytes"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn matches_the_pbkdf2_crate(
            password in proptest::collection::vec(any::<u8>(), 0..300),
            salt in proptest::collection::vec(any::<u8>(), 0..100),
            iterations in 1u32..40,
            len in 1usize..100,
        ) {
            let mut expected = vec![0u8; len];
            pbkdf2::pbkdf2_hmac::<Sha256>(&password, &salt, iterations, &mut expected);
            let mut ours = vec![0u8; len];
            pbkdf2_hmac_sha256(&password, &salt, iterations, &mut ours);
            prop_assert_eq!(ours, expected);
        }
    }
}
