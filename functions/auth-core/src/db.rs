//! The PostgreSQL pool (with TLS the way libpq's `sslmode` means it) and the migrations.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::Config;
use crate::error::Error;

mod embedded {
    refinery::embed_migrations!("../../sql");
}

/// Any fixed number shared by all instances; it names the lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x6c61_7463_686b_6579; // "latchkey"

/// libpq's `sslmode` values. tokio-postgres knows only the first three, so the URL's `sslmode`
/// is taken out before parsing and turned into the matching certificate check here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Splits `sslmode` out of a database URL. The default, as in libpq, is `prefer`.
pub fn split_sslmode(url: &str) -> Result<(String, TlsMode), Error> {
    let bad = |message: &str| Error::Config {
        variable: "DATABASE_URL",
        message: message.to_owned(),
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), TlsMode::Prefer));
    };
    let mut mode = TlsMode::Prefer;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => {
                mode = match value {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    _ => {
                        return Err(bad(
                            "expected sslmode to be disable, prefer, require, verify-ca or verify-full",
                        ));
                    }
                }
            }
            Some(("sslrootcert", _)) => {
                return Err(bad("set the CA bundle with DB_CA_FILE, not sslrootcert"));
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, mode))
}

/// The connection settings of `DATABASE_URL`, with the TLS that its `sslmode` means.
fn connection_settings(
    config: &Config,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), Error> {
    let (url, mode) = split_sslmode(&config.database_url)?;
    let mut pg_config = tokio_postgres::Config::from_str(&url).map_err(|_| Error::Config {
        variable: "DATABASE_URL",
        message: "expected a valid postgres:// URL".to_owned(),
    })?;
    pg_config.ssl_mode(match mode {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
    });
    if pg_config.get_connect_timeout().is_none() {
        pg_config.connect_timeout(config.db_pool_timeout);
    }
    if pg_config.get_application_name().is_none() {
        pg_config.application_name("latchkey");
    }
    // A database host that stops answering (a failover, a firewall change) must turn into 503s
    // within seconds, not hang requests until TCP gives up hours later.
    pg_config.keepalives_idle(std::time::Duration::from_secs(30));
    pg_config.tcp_user_timeout(std::time::Duration::from_secs(10));
    let tls = MakeRustlsConnect::new(tls_config(mode, config.db_ca_file.as_deref())?);
    Ok((pg_config, tls))
}

/// Checks what can be checked without the database (the URL, `sslmode`, the CA file), so that
/// a bad setting stops the process before it binds its port.
pub fn check_settings(config: &Config) -> Result<(), Error> {
    connection_settings(config).map(|_| ())
}

/// Builds the pool. Connections are made lazily, so this succeeds while the database is down.
pub fn create_pool(config: &Config) -> Result<Pool, Error> {
    let (mut pg_config, tls) = connection_settings(config)?;
    // A request's statements are short; one that is not is a fault to cut off, not to wait for.
    if pg_config.get_options().is_none() {
        pg_config.options(
            "-c statement_timeout=10000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=60000",
        );
    }
    let manager = Manager::from_config(
        pg_config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.db_pool_size)
        .wait_timeout(Some(config.db_pool_timeout))
        .create_timeout(Some(config.db_pool_timeout))
        .recycle_timeout(Some(config.db_pool_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| Error::internal("building the database pool", e))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(mode: TlsMode, ca_file: Option<&Path>) -> Result<ClientConfig, Error> {
    let tls_error = |e: rustls::Error| Error::internal("TLS configuration", e);
    let roots = match ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path).map_err(|_| Error::Config {
                variable: "DB_CA_FILE",
                message: "expected a readable PEM file of certificates".to_owned(),
            })?;
            for cert in certs {
                let cert = cert.map_err(|_| Error::Config {
                    variable: "DB_CA_FILE",
                    message: "expected PEM certificates".to_owned(),
                })?;
                roots.add(cert).map_err(|_| Error::Config {
                    variable: "DB_CA_FILE",
                    message: "contains a certificate that cannot be used as a trust anchor"
                        .to_owned(),
                })?;
            }
            if roots.is_empty() {
                return Err(Error::Config {
                    variable: "DB_CA_FILE",
                    message: "expected at least one PEM certificate".to_owned(),
                });
            }
            roots
        }
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?;
    let config = match mode {
        TlsMode::VerifyFull => builder.with_root_certificates(roots).with_no_client_auth(),
        // libpq: with a CA file given, `require` checks the chain like verify-ca.
        TlsMode::VerifyCa | TlsMode::Require if ca_file.is_some() || mode == TlsMode::VerifyCa => {
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| Error::internal("TLS configuration", e))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                .with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// `sslmode=prefer`/`require` without a CA: encryption against passive eavesdropping only,
/// exactly as libpq does it.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name, so a name error means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Applies pending migrations. Instances starting together queue on an advisory lock, so exactly
/// one applies each migration and the others find it done.
pub async fn migrate(config: &Config) -> Result<(), Error> {
    migrate_with(config, embedded::migrations::runner()).await
}

/// Applies `runner`'s migrations on a connection of their own: a migration may rewrite a large
/// table, so none of the limits a request's statements run under applies to it (it already holds
/// the lock that keeps other instances out), and the connection closes when it is done.
pub async fn migrate_with(config: &Config, runner: refinery::Runner) -> Result<(), Error> {
    let (pg_config, tls) = connection_settings(config)?;
    let (mut client, connection) = pg_config.connect(tls).await?;
    let connection = tokio::spawn(connection);
    let result = async {
        client
            .batch_execute(
                "SET statement_timeout = 0; SET lock_timeout = 0; \
                 SET idle_in_transaction_session_timeout = 0",
            )
            .await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        runner
            .run_async(&mut client)
            .await
            .map_err(|e| Error::internal("applying migrations", e))?;
        Ok::<_, Error>(())
    }
    .await;
    // Closing the session releases the advisory lock, after a failure too.
    drop(client);
    let _ = connection.await;
    result
}

/// The newest migration version shipped in this binary, for the readiness check.
pub fn latest_migration_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_split_out_of_the_url() {
        let (url, mode) =
            split_sslmode("postgres://u@h/db?sslmode=verify-full&application_name=x").unwrap();
        assert_eq!(url, "postgres://u@h/db?application_name=x");
        assert_eq!(mode, TlsMode::VerifyFull);
        assert_eq!(
            split_sslmode("postgres://u@h/db").unwrap().1,
            TlsMode::Prefer
        );
        assert_eq!(
            split_sslmode("postgres://u@h/db?sslmode=disable").unwrap(),
            ("postgres://u@h/db".to_owned(), TlsMode::Disable)
        );
        assert!(split_sslmode("postgres://u@h/db?sslmode=sometimes").is_err());
    }
}
