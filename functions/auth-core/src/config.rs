//! Typed, validated configuration read from the environment (every variable: docs/configuration.md).
//!
//! Every invalid value is an error naming the variable and what it accepts, so that a bad deploy
//! stops before the port is bound instead of half-working.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use ipnet::IpNet;

use crate::error::Error;

pub const MIN_PBKDF2_ITERATIONS: u32 = 1000;
pub const RECOMMENDED_PBKDF2_ITERATIONS: u32 = 600_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningAlg {
    Es256,
    EdDsa,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::Es256 => "ES256",
            SigningAlg::EdDsa => "EdDSA",
        }
    }
}

pub use startup::LogFormat;

/// `AUTH_EMAIL_VERIFICATION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmailVerification {
    /// No verification mail; accounts work at once.
    Off,
    /// Accounts work at once; a link is mailed, and `email_verified` says whether it was used.
    Optional,
    /// Registration mails a link instead of signing in; login waits for the verification.
    Required,
}

/// How the connection to the mail server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtps://`: TLS from the first byte (port 465 by default).
    Wrapper,
    /// `smtp://` to another host: STARTTLS, and no mail (nor password) without it.
    StartTlsRequired,
    /// `smtp://` to a loopback address: STARTTLS when the server offers it, plain text
    /// otherwise (a local relay or a test server; nothing leaves the machine).
    StartTlsOpportunistic,
}

/// The mail server, from `SMTP_URL`.
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// User name and password, percent-decoded.
    pub credentials: Option<(String, String)>,
    /// `SMTP_CA_FILE`'s certificates (PEM, checked at start-up): when set, the only roots the
    /// server's certificate may chain to, instead of the Mozilla roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("credentials", &self.credentials.as_ref().map(|_| "<set>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Parses `smtp://[user:pass@]host[:port]` (STARTTLS, port 587) or `smtps://...` (TLS, port 465).
fn parse_smtp_url(text: &str) -> Option<SmtpSettings> {
    let url = url::Url::parse(text.trim()).ok()?;
    // smtp is not one of the URL standard's special schemes, so an IPv4 address comes back as
    // an opaque host name: it is parsed here.
    let host = match url.host()? {
        url::Host::Domain(name) => name.to_owned(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    if host.is_empty() {
        return None;
    }
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let (tls, default_port) = match url.scheme() {
        "smtps" => (SmtpTls::Wrapper, 465),
        "smtp" if loopback => (SmtpTls::StartTlsOpportunistic, 587),
        "smtp" => (SmtpTls::StartTlsRequired, 587),
        _ => return None,
    };
    if !(url.path().is_empty() || url.path() == "/") || url.query().is_some() {
        return None;
    }
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .ok()
            .map(|text| text.into_owned())
    };
    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        (user, Some(password)) if !user.is_empty() => Some((decode(user)?, decode(password)?)),
        _ => return None,
    };
    Some(SmtpSettings {
        host,
        port: url.port().unwrap_or(default_port),
        tls,
        credentials,
        ca_pem: None,
    })
}

/// The largest CA bundle accepted: Mozilla's whole root set is about 200 KiB.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// Reads and checks a PEM bundle of trust anchors: a readable file of at most
/// [`MAX_CA_FILE_BYTES`] holding at least one certificate, each usable as a root.
fn read_ca_bundle(variable: &'static str, path: &str) -> Result<Vec<u8>, Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let expected = "the path of a readable PEM file (at most 1 MiB) of CA certificates";
    let size = std::fs::metadata(path)
        .map_err(|_| invalid(variable, expected))?
        .len();
    if size > MAX_CA_FILE_BYTES {
        return Err(invalid(variable, expected));
    }
    let pem = std::fs::read(path).map_err(|_| invalid(variable, expected))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|_| invalid(variable, expected))?;
        roots.add(cert).map_err(|_| {
            invalid(
                variable,
                "certificates usable as trust anchors (one in the file is not)",
            )
        })?;
    }
    if roots.is_empty() {
        return Err(invalid(variable, expected));
    }
    Ok(pem)
}

#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub listen_addr: SocketAddr,
    pub static_dir: Option<PathBuf>,
    pub issuer: String,
    pub audience: String,
    pub signing_alg: SigningAlg,
    pub access_ttl: Duration,
    pub session_ttl: Duration,
    pub session_idle: Duration,
    pub refresh_reuse_grace: Duration,
    pub pbkdf2_iterations: u32,
    pub password_min_score: u8,
    pub login_free_failures: u32,
    pub login_account_failures: u32,
    pub max_sessions_per_user: u32,
    pub ip_logins_per_minute: u32,
    pub ip_registrations_per_hour: u32,
    pub trusted_proxies: Vec<IpNet>,
    pub allowed_origins: Vec<String>,
    pub cookie_secure: bool,
    pub max_concurrent_hashes: usize,
    pub hash_queue: usize,
    pub key_rotation: Duration,
    pub key_encryption_key: Option<[u8; 32]>,
    pub db_pool_size: usize,
    pub db_pool_timeout: Duration,
    pub db_ca_file: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub rust_log: Option<String>,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    /// `None`: mail is written to the log instead (development).
    pub smtp: Option<SmtpSettings>,
    /// `MAIL_FROM`, checked to be a mailbox (`Name <address>` or a bare address).
    pub mail_from: String,
    /// The front-end's base URL for links in mail, without a trailing slash.
    pub public_url: String,
    pub email_verification: EmailVerification,
}

// Hand-written so that the database password and the key-encryption key never reach a log line.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("listen_addr", &self.listen_addr)
            .field("static_dir", &self.static_dir)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("signing_alg", &self.signing_alg)
            .field("access_ttl", &self.access_ttl)
            .field("session_ttl", &self.session_ttl)
            .field("session_idle", &self.session_idle)
            .field("refresh_reuse_grace", &self.refresh_reuse_grace)
            .field("pbkdf2_iterations", &self.pbkdf2_iterations)
            .field("password_min_score", &self.password_min_score)
            .field("cookie_secure", &self.cookie_secure)
            .field("max_concurrent_hashes", &self.max_concurrent_hashes)
            .field("hash_queue", &self.hash_queue)
            .field(
                "key_encryption_key",
                &self.key_encryption_key.map(|_| "<set>"),
            )
            .field("db_pool_size", &self.db_pool_size)
            .field("db_pool_timeout", &self.db_pool_timeout)
            .field("smtp", &self.smtp)
            .field("mail_from", &self.mail_from)
            .field("public_url", &self.public_url)
            .field("email_verification", &self.email_verification)
            .finish_non_exhaustive()
    }
}

/// `postgres://user:secret@host/db` with the password replaced, for log lines.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, so tests can supply their own values.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let env = Env { lookup: &lookup };
        let database_url = env.required("DATABASE_URL")?;
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(invalid(
                "DATABASE_URL",
                "a postgres:// or postgresql:// URL",
            ));
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let session_ttl = env.secs("AUTH_SESSION_TTL_SECS", 2_592_000, 60, 10 * 365 * 86_400)?;
        let session_idle = env.secs("AUTH_SESSION_IDLE_SECS", 604_800, 60, 10 * 365 * 86_400)?;
        let issuer = env.string("AUTH_ISSUER", "http://localhost:8080")?;
        // The issuer's origin is the service's own (the cookie's origin check): it must be one.
        if normalise_origin(&issuer).is_none() {
            return Err(invalid("AUTH_ISSUER", "an http:// or https:// URL"));
        }
        let smtp = match env.optional("SMTP_URL") {
            None => None,
            Some(text) => Some(parse_smtp_url(&text).ok_or_else(|| {
                invalid(
                    "SMTP_URL",
                    "smtp://user:password@host:587 (STARTTLS) or smtps://user:password@host:465 (TLS)",
                )
            })?),
        };
        let smtp = match (smtp, env.optional("SMTP_CA_FILE")) {
            (smtp, None) => smtp,
            (Some(smtp), Some(path)) => Some(SmtpSettings {
                ca_pem: Some(read_ca_bundle("SMTP_CA_FILE", path.trim())?),
                ..smtp
            }),
            // Set without a mail server: a mistake in the deploy's settings, not a no-op.
            (None, Some(_)) => {
                return Err(invalid(
                    "SMTP_CA_FILE",
                    "to be set only together with SMTP_URL",
                ));
            }
        };
        let mail_from = env.string("MAIL_FROM", "Latchkey <no-reply@localhost>")?;
        if mail_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid(
                "MAIL_FROM",
                "a mailbox such as Latchkey <no-reply@example.com>",
            ));
        }
        let public_url = env
            .string("AUTH_PUBLIC_URL", &issuer)?
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if normalise_origin(&public_url).is_none()
            || public_url.contains(['#', '?'])
            || public_url.contains(char::is_whitespace)
        {
            return Err(invalid(
                "AUTH_PUBLIC_URL",
                "an http:// or https:// URL without query or fragment",
            ));
        }
        let email_verification = match env
            .optional("AUTH_EMAIL_VERIFICATION")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None if smtp.is_some() => EmailVerification::Optional,
            None => EmailVerification::Off,
            Some("off") => EmailVerification::Off,
            Some("optional") => EmailVerification::Optional,
            Some("required") => EmailVerification::Required,
            Some(_) => {
                return Err(invalid(
                    "AUTH_EMAIL_VERIFICATION",
                    "off, optional or required",
                ));
            }
        };
        let config = Config {
            smtp,
            mail_from,
            public_url,
            email_verification,
            listen_addr: env.parsed(
                "LISTEN_ADDR",
                "0.0.0.0:8080",
                "a socket address such as 0.0.0.0:8080",
            )?,
            static_dir: match env.optional("STATIC_DIR") {
                None => None,
                Some(path) => {
                    let path = PathBuf::from(path);
                    if !path.is_dir() {
                        return Err(invalid("STATIC_DIR", "the path of an existing folder"));
                    }
                    Some(path)
                }
            },
            audience: match env.string("AUTH_AUDIENCE", "latchkey")? {
                audience
                    if audience
                        .chars()
                        .any(|c| c.is_control() || c.is_whitespace()) =>
                {
                    return Err(invalid("AUTH_AUDIENCE", "a name without spaces"));
                }
                audience => audience,
            },
            signing_alg: match env.optional("AUTH_SIGNING_ALG").as_deref() {
                None | Some("ES256") => SigningAlg::Es256,
                Some("EdDSA") => SigningAlg::EdDsa,
                Some(_) => return Err(invalid("AUTH_SIGNING_ALG", "ES256 or EdDSA")),
            },
            access_ttl: env.secs("AUTH_ACCESS_TTL_SECS", 900, 10, 86_400)?,
            session_ttl,
            session_idle,
            refresh_reuse_grace: env.secs("AUTH_REFRESH_REUSE_GRACE_SECS", 10, 0, 300)?,
            pbkdf2_iterations: env.number(
                "AUTH_PBKDF2_ITERATIONS",
                RECOMMENDED_PBKDF2_ITERATIONS,
                MIN_PBKDF2_ITERATIONS,
                100_000_000,
            )?,
            password_min_score: env.number("AUTH_PASSWORD_MIN_SCORE", 3, 0, 4)?,
            login_free_failures: env.number("AUTH_LOGIN_FREE_FAILURES", 5, 1, 1000)?,
            login_account_failures: env.number("AUTH_LOGIN_ACCOUNT_FAILURES", 100, 1, 100_000)?,
            max_sessions_per_user: env.number("AUTH_MAX_SESSIONS_PER_USER", 100, 1, 100_000)?,
            ip_logins_per_minute: env.number("AUTH_IP_LOGINS_PER_MINUTE", 30, 0, 1_000_000)?,
            ip_registrations_per_hour: env.number(
                "AUTH_IP_REGISTRATIONS_PER_HOUR",
                20,
                0,
                1_000_000,
            )?,
            trusted_proxies: env.list(
                "AUTH_TRUSTED_PROXIES",
                "a comma-separated list of CIDRs such as 10.0.0.0/8",
                |item| {
                    IpNet::from_str(item)
                        .or_else(|_| std::net::IpAddr::from_str(item).map(IpNet::from))
                        .ok()
                },
            )?,
            allowed_origins: env.list(
                "AUTH_ALLOWED_ORIGINS",
                "a comma-separated list of origins such as https://app.example.com",
                normalise_origin,
            )?,
            cookie_secure: env.boolean("AUTH_COOKIE_SECURE", true)?,
            max_concurrent_hashes: env.number("AUTH_MAX_CONCURRENT_HASHES", cpus, 1, 1024)?,
            hash_queue: env.number("AUTH_HASH_QUEUE", 64, 0, 100_000)?,
            key_rotation: Duration::from_secs(
                86_400 * env.number::<u64>("AUTH_KEY_ROTATION_DAYS", 30, 1, 3650)?,
            ),
            key_encryption_key: match env.optional("AUTH_KEY_ENCRYPTION_KEY") {
                None => None,
                Some(text) => Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(text.trim())
                        .ok()
                        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                        .ok_or_else(|| {
                            invalid(
                                "AUTH_KEY_ENCRYPTION_KEY",
                                "32 bytes in standard base64 (openssl rand -base64 32)",
                            )
                        })?,
                ),
            },
            db_pool_size: env.number("DB_POOL_SIZE", 16, 1, 1000)?,
            db_pool_timeout: Duration::from_millis(env.number(
                "DB_POOL_TIMEOUT_MS",
                2000,
                10,
                600_000,
            )?),
            db_ca_file: match env.optional("DB_CA_FILE") {
                None => None,
                Some(path) => {
                    let path = PathBuf::from(path);
                    if !path.is_file() {
                        return Err(invalid("DB_CA_FILE", "the path of a readable PEM file"));
                    }
                    Some(path)
                }
            },
            rust_log: startup::check_log_filter(env.optional("RUST_LOG")).map_err(|_| {
                invalid(
                    "RUST_LOG",
                    "a tracing filter such as info or auth_core=debug,info",
                )
            })?,
            header_read_timeout: Duration::from_millis(env.number(
                "HTTP_HEADER_READ_TIMEOUT_MS",
                10_000,
                100,
                600_000,
            )?),
            body_read_timeout: Duration::from_millis(env.number(
                "HTTP_BODY_READ_TIMEOUT_MS",
                10_000,
                100,
                600_000,
            )?),
            request_timeout: Duration::from_millis(env.number(
                "HTTP_REQUEST_TIMEOUT_MS",
                30_000,
                100,
                600_000,
            )?),
            max_connections: env.number("HTTP_MAX_CONNECTIONS", 4096, 1, 1_000_000)?,
            log_format: LogFormat::from_setting(env.optional("LOG_FORMAT").as_deref())
                .map_err(|_| invalid("LOG_FORMAT", "json or pretty"))?,
            issuer,
            database_url,
        };
        if normalise_origin(&config.issuer).is_none() {
            return Err(invalid("AUTH_ISSUER", "an http(s) URL"));
        }
        if config.session_idle > config.session_ttl {
            return Err(invalid(
                "AUTH_SESSION_IDLE_SECS",
                "a number of seconds no larger than AUTH_SESSION_TTL_SECS",
            ));
        }
        Ok(config)
    }

    /// The origin of `AUTH_ISSUER`, which is this service's own origin for the cookie check.
    pub fn own_origin(&self) -> Option<String> {
        normalise_origin(&self.issuer)
    }
}

/// `scheme://host[:port]` in lower case without a path, or `None` when `text` is not an origin.
pub fn normalise_origin(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches('/');
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split('/').next()?;
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

fn invalid(variable: &'static str, expected: &str) -> Error {
    Error::Config {
        variable,
        message: format!("expected {expected}"),
    }
}

struct Env<'a, F: Fn(&str) -> Option<String>> {
    lookup: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    /// An unset or empty variable means "use the default".
    fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.trim().is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, Error> {
        self.optional(name)
            .ok_or_else(|| invalid(name, "a value (it is required)"))
    }

    fn string(&self, name: &'static str, default: &str) -> Result<String, Error> {
        let value = self.optional(name).unwrap_or_else(|| default.to_owned());
        if value.len() > 512 {
            return Err(invalid(name, "at most 512 characters"));
        }
        Ok(value)
    }

    fn parsed<T: FromStr>(
        &self,
        name: &'static str,
        default: &str,
        expected: &str,
    ) -> Result<T, Error> {
        let value = self.optional(name).unwrap_or_else(|| default.to_owned());
        value.trim().parse().map_err(|_| invalid(name, expected))
    }

    fn number<T>(&self, name: &'static str, default: T, min: T, max: T) -> Result<T, Error>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        let expected = format!("a whole number from {min} to {max}");
        let value = match self.optional(name) {
            None => default,
            Some(text) => text.trim().parse().map_err(|_| invalid(name, &expected))?,
        };
        if value < min || value > max {
            return Err(invalid(name, &expected));
        }
        Ok(value)
    }

    fn secs(
        &self,
        name: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<Duration, Error> {
        self.number(name, default, min, max)
            .map(Duration::from_secs)
    }

    fn boolean(&self, name: &'static str, default: bool) -> Result<bool, Error> {
        match self
            .optional(name)
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(_) => Err(invalid(name, "true or false")),
        }
    }

    fn list<T>(
        &self,
        name: &'static str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Vec<T>, Error> {
        let Some(text) = self.optional(name) else {
            return Ok(Vec::new());
        };
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| parse(item).ok_or_else(|| invalid(name, expected)))
            .collect()
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
