//! Passwords and emails: normalisation, policy, and PBKDF2 hashing in PHC form. The hashing runs
//! in [`crate::hashing::HashingPool`], off the async worker threads, where two waiting derivations
//! share one thread.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use subtle::ConstantTimeEq;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, FieldErrors};
use crate::hashing::{DeriveRequest, HashingPool};

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 256;
const ZXCVBN_MAX_CHARS: usize = 64;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
/// A stored hash claiming more than this is corrupt or hostile; refusing it bounds the work one
/// login can cause.
const MAX_STORED_ITERATIONS: u32 = 100_000_000;

/// Trims and lower-cases an email, or says in words why it is not one.
/// Characters that show nothing or reorder text: an address holding one can look identical to
/// another account's in every list and mail client.
fn is_invisible_or_bidi(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{E0000}'..='\u{E0FFF}')
}

pub fn normalise_email(raw: &str) -> Result<String, Vec<String>> {
    // NFC first, so that the same address typed with composed or decomposed accents is one
    // account; then lower case.
    let email = raw.trim().nfc().collect::<String>().to_lowercase();
    let mut reasons = Vec::new();
    let length = email.chars().count();
    if !(3..=254).contains(&length) {
        reasons.push("Email must be between 3 and 254 characters.".to_owned());
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        reasons.push("Email must not contain spaces or control characters.".to_owned());
    }
    if email.chars().any(is_invisible_or_bidi) {
        reasons.push("Email must not contain invisible or text-direction characters.".to_owned());
    }
    match email.split_once('@') {
        Some((local, domain)) if !domain.contains('@') => {
            if local.is_empty() {
                reasons.push("Email needs a name before the '@'.".to_owned());
            }
            let labels_ok = domain.split('.').all(|label| !label.is_empty());
            if !domain.contains('.') || !labels_ok {
                reasons.push(
                    "Email needs a domain with a dot after the '@', such as example.com."
                        .to_owned(),
                );
            }
        }
        _ => reasons.push("Email must contain exactly one '@'.".to_owned()),
    }
    if reasons.is_empty() {
        Ok(email)
    } else {
        Err(reasons)
    }
}

/// NFKC, so that the same password typed on different keyboards hashes the same.
pub fn normalise_password(raw: &str) -> String {
    raw.nfkc().collect()
}

/// A password presented for checking (login, re-authentication), normalised; `None` when it
/// breaks the one length rule every stored password obeys (at most [`MAX_PASSWORD_CHARS`] after
/// NFKC), so that no hash is spent on a password no account can have.
pub fn password_as_typed(raw: &str) -> Option<String> {
    let password = normalise_password(raw);
    (password.chars().count() <= MAX_PASSWORD_CHARS).then_some(password)
}

/// Length and strength rules for an already normalised password, with the reasons in words.
pub fn check_password_policy(
    password: &str,
    email: &str,
    min_score: u8,
) -> Result<(), Vec<String>> {
    let length = password.chars().count();
    if length < MIN_PASSWORD_CHARS {
        return Err(vec![format!(
            "Password must be at least {MIN_PASSWORD_CHARS} characters."
        )]);
    }
    if length > MAX_PASSWORD_CHARS {
        return Err(vec![format!(
            "Password must be at most {MAX_PASSWORD_CHARS} characters."
        )]);
    }
    let local_part = email.split('@').next().unwrap_or(email);
    // zxcvbn's cost climbs steeply with length (about 100 ms at 100 random characters); the
    // first 64 characters decide the score of any realistic password.
    let scored: String = password.chars().take(ZXCVBN_MAX_CHARS).collect();
    let estimate = zxcvbn::zxcvbn(&scored, &[email, local_part]);
    let score = u8::from(estimate.score());
    if score >= min_score {
        return Ok(());
    }
    let mut reasons = vec!["Password is too easy to guess.".to_owned()];
    if let Some(feedback) = estimate.feedback() {
        if let Some(warning) = feedback.warning() {
            reasons.push(warning.to_string());
        }
        reasons.extend(feedback.suggestions().iter().map(ToString::to_string));
    }
    if reasons.len() == 1 {
        reasons.push("Add another word or two; uncommon words are better.".to_owned());
    }
    Err(reasons)
}

/// A new password (a change or a reset), normalised, once it passes the policy for `email`; a
/// refusal is a 422 on the `new_password` field.
pub fn check_new_password(raw: &str, email: &str, min_score: u8) -> Result<String, Error> {
    let normalised = normalise_password(raw);
    check_password_policy(&normalised, email, min_score).map_err(|reasons| {
        let mut errors = FieldErrors::new();
        errors.insert("new_password", reasons);
        Error::Validation(errors)
    })?;
    Ok(normalised)
}

/// Validates a registration's fields together, so that one 422 lists every problem.
pub fn validate_credentials(
    raw_email: &str,
    raw_password: &str,
    min_score: u8,
) -> Result<(String, String), Error> {
    let mut errors = FieldErrors::new();
    let email = normalise_email(raw_email).map_err(|reasons| errors.insert("email", reasons));
    let password = normalise_password(raw_password);
    let policy_email = email.as_deref().unwrap_or(raw_email);
    if let Err(reasons) = check_password_policy(&password, policy_email, min_score) {
        errors.insert("password", reasons);
    }
    match email {
        Ok(email) if errors.is_empty() => Ok((email, password)),
        _ => Err(Error::Validation(errors)),
    }
}

/// `$pbkdf2-sha256$i=<iterations>,l=32$<salt>$<hash>`, the PHC form the `pbkdf2` crate writes.
/// The derivation runs in `pool`.
pub async fn hash_password(
    pool: &HashingPool,
    password: &str,
    iterations: u32,
) -> Result<String, Error> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt)
        .map_err(|e| Error::internal("no randomness for a salt", e.to_string()))?;
    let hash = pool
        .derive(DeriveRequest {
            password: password.as_bytes().to_vec(),
            salt: salt.to_vec(),
            iterations,
            extra_iterations: 0,
            len: HASH_LEN,
        })
        .await?;
    Ok(format!(
        "$pbkdf2-sha256$i={iterations},l={HASH_LEN}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(hash)
    ))
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verification {
    Mismatch,
    /// `needs_rehash` when the stored hash used fewer iterations than are configured now.
    Match {
        needs_rehash: bool,
    },
}

/// Checks `password` against a stored PHC string in constant time; the derivation runs in `pool`.
pub async fn verify_password(
    pool: &HashingPool,
    password: &str,
    stored: &str,
    configured_iterations: u32,
) -> Result<Verification, Error> {
    let parsed = parse_phc(stored)
        .ok_or_else(|| Error::internal("stored password hash", "not a PBKDF2-SHA256 PHC string"))?;
    let computed = pool
        .derive(DeriveRequest {
            password: password.as_bytes().to_vec(),
            salt: parsed.salt,
            iterations: parsed.iterations,
            // Spend what the configured count would have cost: a wrong password for an account
            // with an old, cheaper hash must take as long as one for an unknown email (checked
            // against a dummy hash at the configured count).
            extra_iterations: configured_iterations.saturating_sub(parsed.iterations),
            len: parsed.hash.len(),
        })
        .await?;
    if bool::from(computed.ct_eq(&parsed.hash)) {
        Ok(Verification::Match {
            needs_rehash: parsed.iterations < configured_iterations,
        })
    } else {
        Ok(Verification::Mismatch)
    }
}

struct Phc {
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

fn parse_phc(stored: &str) -> Option<Phc> {
    let mut parts = stored.split('$');
    if !parts.next()?.is_empty() || parts.next()? != "pbkdf2-sha256" {
        return None;
    }
    let params = parts.next()?;
    let salt = STANDARD_NO_PAD.decode(parts.next()?).ok()?;
    let hash = STANDARD_NO_PAD.decode(parts.next()?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    let mut iterations = None;
    let mut length = None;
    for param in params.split(',') {
        match param.split_once('=')? {
            ("i", value) => iterations = value.parse::<u32>().ok(),
            ("l", value) => length = value.parse::<usize>().ok(),
            _ => return None,
        }
    }
    let iterations = iterations.filter(|i| (1..=MAX_STORED_ITERATIONS).contains(i))?;
    if length.is_some_and(|l| l != hash.len())
        || !(16..=64).contains(&hash.len())
        || salt.is_empty()
    {
        return None;
    }
    Some(Phc {
        iterations,
        salt,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> HashingPool {
        HashingPool::new(1, 4).unwrap()
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            normalise_email("  Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
    }

    #[test]
    fn malformed_emails_are_rejected_with_reasons() {
        for bad in [
            "",
            "ab",
            "annexample.com",
            "ann@@example.com",
            "@example.com",
            "ann@localhost",
            "ann@example.",
            "a nn@example.com",
        ] {
            let reasons = normalise_email(bad).expect_err(bad);
            assert!(!reasons.is_empty(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(normalise_email(&long).is_err());
    }

    #[test]
    fn passwords_are_nfkc_normalised() {
        // U+FB01 (the "fi" ligature) and full-width letters fold to their plain forms.
        assert_eq!(normalise_password("\u{FB01}ne"), "fine");
        assert_eq!(normalise_password("ＡＢＣ"), "ABC");
    }

    #[test]
    fn weak_short_and_long_passwords_are_explained() {
        let short = check_password_policy("abc", "ann@example.com", 3).unwrap_err();
        assert!(short[0].contains("at least 8"));
        let long = check_password_policy(&"x".repeat(257), "ann@example.com", 3).unwrap_err();
        assert!(long[0].contains("at most 256"));
        let weak = check_password_policy("password1", "ann@example.com", 3).unwrap_err();
        assert!(weak.len() >= 2, "{weak:?}");
        let email_based = check_password_policy("annexample", "ann@example.com", 3);
        assert!(email_based.is_err());
        assert!(
            check_password_policy("correct horse battery staple", "ann@example.com", 3).is_ok()
        );
    }

    #[tokio::test]
    async fn hashes_verify_and_flag_old_iteration_counts() {
        let stored = hash_password(&pool(), "correct horse", 1000).await.unwrap();
        assert!(stored.starts_with("$pbkdf2-sha256$i=1000,l=32$"));
        assert_eq!(
            verify_password(&pool(), "correct horse", &stored, 1000)
                .await
                .unwrap(),
            Verification::Match {
                needs_rehash: false
            }
        );
        assert_eq!(
            verify_password(&pool(), "correct horse", &stored, 2000)
                .await
                .unwrap(),
            Verification::Match { needs_rehash: true }
        );
        assert_eq!(
            verify_password(&pool(), "correct horsf", &stored, 1000)
                .await
                .unwrap(),
            Verification::Mismatch
        );
    }

    #[tokio::test]
    async fn our_phc_strings_verify_with_the_pbkdf2_crate_and_theirs_with_ours() {
        use pbkdf2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash_password(&pool(), "correct horse", 1000).await.unwrap();
        let parsed = pbkdf2::phc::PasswordHash::new(&ours).unwrap();
        assert!(
            pbkdf2::Pbkdf2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            pbkdf2::Pbkdf2::default()
                .verify_password(b"correct horsf", &parsed)
                .is_err()
        );
        let theirs = pbkdf2::Pbkdf2::default()
            .hash_password_with_salt(b"battery staple", &[7u8; 16])
            .unwrap()
            .to_string();
        assert_eq!(
            verify_password(&pool(), "battery staple", &theirs, 1000)
                .await
                .unwrap(),
            Verification::Match {
                needs_rehash: false
            }
        );
    }

    #[tokio::test]
    async fn two_hashes_of_one_password_differ_by_salt() {
        assert_ne!(
            hash_password(&pool(), "same", 1000).await.unwrap(),
            hash_password(&pool(), "same", 1000).await.unwrap()
        );
    }

    #[tokio::test]
    async fn corrupt_or_hostile_stored_hashes_are_errors() {
        for bad in [
            "",
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA",
            "$pbkdf2-sha256$i=0,l=32$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$pbkdf2-sha256$i=4000000000,l=32$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$pbkdf2-sha256$i=1000,l=32$c2FsdHNhbHRzYWx0$!!!",
        ] {
            assert!(
                verify_password(&pool(), "x", bad, 1000).await.is_err(),
                "{bad}"
            );
        }
    }
}
