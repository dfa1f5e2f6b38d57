//! Unit tests of `config.rs`, kept beside it so that the module reads as one piece.
use super::*;
use std::collections::HashMap;

fn config_with(pairs: &[(&str, &str)]) -> Result<Config, Error> {
    let mut map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.entry("DATABASE_URL".into())
        .or_insert_with(|| "postgres://u:p@localhost/db".into());
    Config::from_lookup(move |name| map.get(name).cloned())
}

fn rejected_variable(pairs: &[(&str, &str)]) -> &'static str {
    match config_with(pairs) {
        Err(Error::Config { variable, .. }) => variable,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn defaults_follow_the_contract() {
    let config = config_with(&[]).unwrap();
    assert_eq!(config.listen_addr.to_string(), "0.0.0.0:8080");
    assert_eq!(config.access_ttl, Duration::from_secs(900));
    assert_eq!(config.session_ttl, Duration::from_secs(2_592_000));
    assert_eq!(config.session_idle, Duration::from_secs(604_800));
    assert_eq!(config.refresh_reuse_grace, Duration::from_secs(10));
    assert_eq!(config.pbkdf2_iterations, 600_000);
    assert_eq!(config.password_min_score, 3);
    assert_eq!(config.signing_alg, SigningAlg::Es256);
    assert!(config.cookie_secure);
    assert_eq!(config.hash_queue, 64);
    assert_eq!(config.db_pool_size, 16);
    assert_eq!(config.db_pool_timeout, Duration::from_millis(2000));
    assert_eq!(
        config.own_origin().as_deref(),
        Some("http://localhost:8080")
    );
}

/// One bad value for every variable this file reads; the second half checks that the table
/// names them all, so a new variable cannot be added without a bad value tried.
const BAD_VALUES: &[(&str, &str)] = &[
    ("DATABASE_URL", "mysql://x"),
    ("LISTEN_ADDR", "nowhere"),
    ("STATIC_DIR", "/no/such/folder"),
    ("AUTH_ISSUER", "latchkey"),
    ("AUTH_AUDIENCE", "two words"),
    ("AUTH_SIGNING_ALG", "HS256"),
    ("AUTH_ACCESS_TTL_SECS", "5"),
    ("AUTH_SESSION_TTL_SECS", "59"),
    ("AUTH_SESSION_IDLE_SECS", "forever"),
    ("AUTH_REFRESH_REUSE_GRACE_SECS", "301"),
    ("AUTH_PBKDF2_ITERATIONS", "999"),
    ("AUTH_PASSWORD_MIN_SCORE", "5"),
    ("AUTH_LOGIN_FREE_FAILURES", "0"),
    ("AUTH_LOGIN_ACCOUNT_FAILURES", "0"),
    ("AUTH_MAX_SESSIONS_PER_USER", "0"),
    ("AUTH_IP_LOGINS_PER_MINUTE", "-1"),
    ("AUTH_IP_REGISTRATIONS_PER_HOUR", "lots"),
    ("AUTH_TRUSTED_PROXIES", "10.0.0.0/33"),
    ("AUTH_ALLOWED_ORIGINS", "ftp://x"),
    ("AUTH_COOKIE_SECURE", "maybe"),
    ("AUTH_MAX_CONCURRENT_HASHES", "0"),
    ("AUTH_HASH_QUEUE", "100001"),
    ("AUTH_KEY_ROTATION_DAYS", "0"),
    ("AUTH_KEY_ENCRYPTION_KEY", "c2hvcnQ="),
    ("DB_POOL_SIZE", "0"),
    ("DB_POOL_TIMEOUT_MS", "-1"),
    ("DB_CA_FILE", "/no/such/file.pem"),
    ("RUST_LOG", "info,[[["),
    ("HTTP_HEADER_READ_TIMEOUT_MS", "1"),
    ("HTTP_BODY_READ_TIMEOUT_MS", "1"),
    ("HTTP_REQUEST_TIMEOUT_MS", "1"),
    ("HTTP_MAX_CONNECTIONS", "0"),
    ("LOG_FORMAT", "xml"),
    ("SMTP_URL", "http://mail.example.com"),
    ("SMTP_CA_FILE", "/no/such/file.pem"),
    ("MAIL_FROM", "not a mailbox"),
    ("AUTH_PUBLIC_URL", "app.example.com"),
    ("AUTH_EMAIL_VERIFICATION", "sometimes"),
];

#[test]
fn a_bad_value_of_every_variable_is_refused_by_name() {
    for (variable, value) in BAD_VALUES {
        assert_eq!(
            rejected_variable(&[(variable, value)]),
            *variable,
            "{variable}={value:?}"
        );
    }
    let source = include_str!("config.rs");
    let test_module = source.find("#[cfg(test)]").unwrap_or(source.len());
    // Every string literal that is a whole variable name: "NAME", found without parsing Rust.
    let read: std::collections::BTreeSet<&str> = source[..test_module]
        .match_indices('"')
        .filter_map(|(start, _)| {
            let rest = &source[start + 1..test_module];
            let name = &rest[..rest.find('"')?];
            let is_name = name.len() > 3
                && name.contains('_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            is_name.then_some(name)
        })
        .collect();
    let tried: std::collections::BTreeSet<&str> =
        BAD_VALUES.iter().map(|(variable, _)| *variable).collect();
    assert_eq!(
        read, tried,
        "every variable config.rs reads has a bad value above"
    );
}

#[test]
fn every_invalid_value_names_its_variable() {
    assert_eq!(rejected_variable(&[("DATABASE_URL", "")]), "DATABASE_URL");
    assert_eq!(
        rejected_variable(&[("DATABASE_URL", "mysql://x")]),
        "DATABASE_URL"
    );
    assert_eq!(
        rejected_variable(&[("LISTEN_ADDR", "nowhere")]),
        "LISTEN_ADDR"
    );
    assert_eq!(
        rejected_variable(&[("AUTH_SIGNING_ALG", "HS256")]),
        "AUTH_SIGNING_ALG"
    );
    assert_eq!(
        rejected_variable(&[("AUTH_PBKDF2_ITERATIONS", "999")]),
        "AUTH_PBKDF2_ITERATIONS"
    );
    assert_eq!(
        rejected_variable(&[("AUTH_PBKDF2_ITERATIONS", "many")]),
        "AUTH_PBKDF2_ITERATIONS"
    );
    assert_eq!(
        rejected_variable(&[("AUTH_PASSWORD_MIN_SCORE", "5")]),
        "AUTH_PASSWORD_MIN_SCORE"
    );
    assert_eq!(
        rejected_variable(&[("AUTH_COOKIE_SECURE", "maybe")]),
        "AUTH_COOKIE_SECURE"
    );
    assert_eq!(
        rejected_variable(&[("AUTH_TRUSTED_PROXIES", "10.0.0.0/33")]),
        "AUTH_TRUSTED_PROXIES"
    );
    assert_eq!(
        rejected_variable(&[("AUTH_ALLOWED_ORIGINS", "ftp://x")]),
        "AUTH_ALLOWED_ORIGINS"
    );
    assert_eq!(
        rejected_variable(&[("AUTH_KEY_ENCRYPTION_KEY", "c2hvcnQ=")]),
        "AUTH_KEY_ENCRYPTION_KEY"
    );
    assert_eq!(rejected_variable(&[("DB_POOL_SIZE", "0")]), "DB_POOL_SIZE");
    assert_eq!(
        rejected_variable(&[("DB_CA_FILE", "/no/such/file.pem")]),
        "DB_CA_FILE"
    );
    assert_eq!(rejected_variable(&[("LOG_FORMAT", "xml")]), "LOG_FORMAT");
    assert_eq!(
        rejected_variable(&[("HTTP_MAX_CONNECTIONS", "0")]),
        "HTTP_MAX_CONNECTIONS"
    );
    assert_eq!(
        rejected_variable(&[("HTTP_REQUEST_TIMEOUT_MS", "1")]),
        "HTTP_REQUEST_TIMEOUT_MS"
    );
    assert_eq!(rejected_variable(&[("RUST_LOG", "info,[[[")]), "RUST_LOG");
    assert_eq!(
        rejected_variable(&[("STATIC_DIR", "/no/such/folder")]),
        "STATIC_DIR"
    );
    assert_eq!(
        rejected_variable(&[
            ("AUTH_SESSION_IDLE_SECS", "7200"),
            ("AUTH_SESSION_TTL_SECS", "3600")
        ]),
        "AUTH_SESSION_IDLE_SECS"
    );
}

#[test]
fn lists_and_origins_are_normalised() {
    let config = config_with(&[
        ("AUTH_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
        (
            "AUTH_ALLOWED_ORIGINS",
            "https://App.Example.com/, http://localhost:3000",
        ),
    ])
    .unwrap();
    assert_eq!(config.trusted_proxies.len(), 2);
    assert_eq!(
        config.allowed_origins,
        vec!["https://app.example.com", "http://localhost:3000"]
    );
}

#[test]
fn debug_output_hides_the_database_password() {
    let config =
        config_with(&[("DATABASE_URL", "postgres://app:hunter2secret@db:5432/x")]).unwrap();
    let printed = format!("{config:?}");
    assert!(!printed.contains("hunter2secret"));
    assert!(printed.contains("postgres://app:***@db:5432/x"));
}

#[test]
fn smtp_urls_choose_tls_by_scheme_and_host() {
    let smtp = |url: &str| config_with(&[("SMTP_URL", url)]).unwrap().smtp.unwrap();
    let remote = smtp("smtp://user%40x:p%3Ass@mail.example.com");
    assert_eq!(
        (remote.host.as_str(), remote.port, remote.tls),
        ("mail.example.com", 587, SmtpTls::StartTlsRequired)
    );
    assert_eq!(
        remote.credentials,
        Some(("user@x".to_owned(), "p:ss".to_owned()))
    );
    assert!(!format!("{remote:?}").contains("p:ss"));
    let wrapped = smtp("smtps://email-smtp.eu-west-1.amazonaws.com");
    assert_eq!((wrapped.port, wrapped.tls), (465, SmtpTls::Wrapper));
    let local = smtp("smtp://127.0.0.1:2525");
    assert_eq!(
        (local.port, local.tls),
        (2525, SmtpTls::StartTlsOpportunistic)
    );
    for bad in [
        "smtp://user@host",
        "smtp://host/path",
        "smtp://host?tls=none",
        "smtp://",
    ] {
        assert_eq!(rejected_variable(&[("SMTP_URL", bad)]), "SMTP_URL", "{bad}");
    }
}

#[test]
fn email_verification_defaults_to_optional_only_with_a_mail_server() {
    let config = config_with(&[]).unwrap();
    assert_eq!(config.email_verification, EmailVerification::Off);
    assert_eq!(config.public_url, "http://localhost:8080");
    let config = config_with(&[
        ("SMTP_URL", "smtp://localhost:25"),
        ("AUTH_PUBLIC_URL", "https://app.example.com/"),
    ])
    .unwrap();
    assert_eq!(config.email_verification, EmailVerification::Optional);
    assert_eq!(config.public_url, "https://app.example.com");
    let config = config_with(&[("AUTH_EMAIL_VERIFICATION", "Required")]).unwrap();
    assert_eq!(config.email_verification, EmailVerification::Required);
}

#[test]
fn smtp_ca_file_must_be_a_pem_bundle_of_roots_and_go_with_smtp_url() {
    let dir = std::env::temp_dir().join(format!("latchkey-smtp-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "no certificate here\n").unwrap();
    let too_big = dir.join("big.pem");
    std::fs::write(&too_big, vec![b'A'; 2 * 1024 * 1024]).unwrap();
    let with_url = |path: &std::path::Path| {
        rejected_variable(&[
            ("SMTP_URL", "smtps://mail.example.com"),
            ("SMTP_CA_FILE", path.to_str().unwrap()),
        ])
    };
    assert_eq!(with_url(&not_pem), "SMTP_CA_FILE");
    assert_eq!(with_url(&too_big), "SMTP_CA_FILE");
    assert_eq!(with_url(&dir), "SMTP_CA_FILE", "a folder");
    std::fs::remove_dir_all(&dir).ok();
}
