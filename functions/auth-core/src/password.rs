//! Passwords and emails: normalisation, policy, PBKDF2 hashing in PHC form, and the bounded pool
//! that keeps hashing off the async worker threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, FieldErrors};

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 256;
const ZXCVBN_MAX_CHARS: usize = 64;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
/// A stored hash claiming more than this is corrupt or hostile; refusing it bounds the work one
/// login can cause.
const MAX_STORED_ITERATIONS: u32 = 100_000_000;

/// Trims and lower-cases an email, or says in words why it is not one.
pub fn normalise_email(raw: &str) -> Result<String, Vec<String>> {
    let email = raw.trim().to_lowercase();
    let mut reasons = Vec::new();
    let length = email.chars().count();
    if !(3..=254).contains(&length) {
        reasons.push("Email must be between 3 and 254 characters.".to_owned());
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        reasons.push("Email must not contain spaces or control characters.".to_owned());
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
pub fn hash_password(password: &str, iterations: u32) -> Result<String, Error> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt)
        .map_err(|e| Error::internal("no randomness for a salt", e.to_string()))?;
    let mut hash = [0u8; HASH_LEN];
    crate::kdf::pbkdf2_hmac_sha256(password.as_bytes(), &salt, iterations, &mut hash);
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

/// Checks `password` against a stored PHC string in constant time.
pub fn verify_password(
    password: &str,
    stored: &str,
    configured_iterations: u32,
) -> Result<Verification, Error> {
    let parsed = parse_phc(stored)
        .ok_or_else(|| Error::internal("stored password hash", "not a PBKDF2-SHA256 PHC string"))?;
    let mut computed = vec![0u8; parsed.hash.len()];
    crate::kdf::pbkdf2_hmac_sha256(
        password.as_bytes(),
        &parsed.salt,
        parsed.iterations,
        &mut computed,
    );
    if parsed.iterations < configured_iterations {
        // Spend what the configured count would have cost: a wrong password for an account with
        // an old, cheaper hash must take as long as one for an unknown email (checked against a
        // dummy hash at the configured count).
        let mut wasted = [0u8; HASH_LEN];
        crate::kdf::pbkdf2_hmac_sha256(
            password.as_bytes(),
            &parsed.salt,
            configured_iterations - parsed.iterations,
            &mut wasted,
        );
        std::hint::black_box(&wasted);
    }
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

/// Runs password hashing on threads of its own, at most `max_concurrent` at a time with at most
/// `queue` waiting; past that a request is refused at once with 503 `overloaded`, because a queue
/// without a bound turns a login flood into timeouts for everyone. The hashing threads run at a
/// lower scheduling priority (nice 10): when every core is hashing, requests that need no hash
/// (token checks, refreshes) still get the CPU first.
pub struct HashingPool {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    jobs: std::sync::mpsc::Sender<HashJob>,
}

type HashJob = Box<dyn FnOnce() + Send>;

/// Leaves the queue count right even when the waiting request is cancelled.
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Lowers the calling thread's priority; on Linux `setpriority(PRIO_PROCESS, 0, ..)` applies to
/// the calling thread only. Failing to is harmless: the thread just keeps the normal priority.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

impl HashingPool {
    pub fn new(max_concurrent: usize, queue: usize) -> Result<Self, Error> {
        let threads = max_concurrent.max(1);
        let (jobs, receiver) = std::sync::mpsc::channel::<HashJob>();
        let receiver = Arc::new(std::sync::Mutex::new(receiver));
        for index in 0..threads {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("latchkey-hash-{index}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    loop {
                        // The lock is held only while taking a job, never while running one.
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match job {
                            // A job that panics must not take its thread with it.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            // The pool was dropped: the thread ends.
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| Error::internal("starting the hashing threads", e))?;
        }
        Ok(HashingPool {
            permits: Arc::new(Semaphore::new(threads)),
            waiting: AtomicUsize::new(0),
            queue,
            jobs,
        })
    }

    /// Requests waiting for a hashing slot right now.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub async fn run<T, F>(&self, job: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let already_waiting = self.waiting.fetch_add(1, Ordering::SeqCst);
                let _slot = QueueSlot(&self.waiting);
                if already_waiting >= self.queue {
                    return Err(Error::Overloaded {
                        retry_after_secs: 1,
                    });
                }
                Arc::clone(&self.permits)
                    .acquire_owned()
                    .await
                    .map_err(|e| Error::internal("hashing pool closed", e))?
            }
        };
        // One permit per thread: a job handed over with a permit starts at once. The permit is
        // released by the job itself, so a caller that gives up cannot over-commit the threads.
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(job());
                drop(permit);
            }))
            .map_err(|_| Error::internal("hashing threads", "the pool has stopped"))?;
        result.await.map_err(|e| Error::internal("hashing job", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn hashes_verify_and_flag_old_iteration_counts() {
        let stored = hash_password("correct horse", 1000).unwrap();
        assert!(stored.starts_with("$pbkdf2-sha256$i=1000,l=32$"));
        assert_eq!(
            verify_password("correct horse", &stored, 1000).unwrap(),
            Verification::Match {
                needs_rehash: false
            }
        );
        assert_eq!(
            verify_password("correct horse", &stored, 2000).unwrap(),
            Verification::Match { needs_rehash: true }
        );
        assert_eq!(
            verify_password("correct horsf", &stored, 1000).unwrap(),
            Verification::Mismatch
        );
    }

    #[test]
    fn our_phc_strings_verify_with_the_pbkdf2_crate_and_theirs_with_ours() {
        use pbkdf2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash_password("correct horse", 1000).unwrap();
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
            verify_password("battery staple", &theirs, 1000).unwrap(),
            Verification::Match {
                needs_rehash: false
            }
        );
    }

    #[test]
    fn two_hashes_of_one_password_differ_by_salt() {
        assert_ne!(
            hash_password("same", 1000).unwrap(),
            hash_password("same", 1000).unwrap()
        );
    }

    #[test]
    fn corrupt_or_hostile_stored_hashes_are_errors() {
        for bad in [
            "",
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA",
            "$pbkdf2-sha256$i=0,l=32$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$pbkdf2-sha256$i=4000000000,l=32$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$pbkdf2-sha256$i=1000,l=32$c2FsdHNhbHRzYWx0$!!!",
        ] {
            assert!(verify_password("x", bad, 1000).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_pool_refuses_work_beyond_its_queue() {
        let pool = Arc::new(HashingPool::new(1, 1).unwrap());
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let running = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(move || release_rx.recv().is_ok()).await })
        };
        while pool.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let queued = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(|| 7).await })
        };
        while pool.queue_depth() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            pool.run(|| 0).await,
            Err(Error::Overloaded { .. })
        ));
        release_tx.send(()).unwrap();
        assert!(running.await.unwrap().unwrap());
        assert_eq!(queued.await.unwrap().unwrap(), 7);
        assert_eq!(pool.queue_depth(), 0);
    }
}
