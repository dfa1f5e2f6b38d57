//! TLS to PostgreSQL as `sslmode` means it, against the local cluster that `make test` starts
//! with a certificate from its own CA (`LATCHKEY_TEST_CA`).

use std::sync::Arc;

use crate::helpers::{TestDatabase, no_tls};

fn test_ca() -> Option<String> {
    match std::env::var("LATCHKEY_TEST_CA") {
        Ok(path) => Some(path),
        Err(_) if std::env::var("LATCHKEY_SKIP_TLS_TESTS").as_deref() == Ok("1") => None,
        Err(_) => panic!(
            "LATCHKEY_TEST_CA must name the test cluster's CA (make test sets it), or set LATCHKEY_SKIP_TLS_TESTS=1"
        ),
    }
}

async fn start(
    db: &Arc<TestDatabase>,
    sslmode: &str,
    ca: Option<&str>,
) -> Result<auth_core::Application, auth_core::Error> {
    let mut settings = crate::helpers::base_settings(&db.url);
    settings.insert(
        "DATABASE_URL".into(),
        format!("{}?sslmode={sslmode}", no_tls(&db.url)),
    );
    if let Some(ca) = ca {
        settings.insert("DB_CA_FILE".into(), ca.into());
    }
    let config = auth_core::Config::from_lookup(|name| settings.get(name).cloned()).unwrap();
    auth_core::Application::build(config).await
}

/// Whether every connection the service holds to `db` is encrypted.
async fn service_connections_use_tls(db: &TestDatabase) -> bool {
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'latchkey' AND a.datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    let connections: i64 = row.get(0);
    assert!(connections > 0, "the service holds pooled connections");
    row.get(1)
}

#[tokio::test]
async fn verify_full_with_the_ca_file_connects_over_tls() {
    let Some(ca) = test_ca() else { return };
    let db = Arc::new(TestDatabase::create().await);
    let app = start(&db, "verify-full", Some(&ca))
        .await
        .expect("verify-full with the right CA");
    assert!(service_connections_use_tls(&db).await);
    assert!(app.auth().unwrap().ready().await);
}

#[tokio::test]
async fn verify_full_without_the_ca_refuses_the_unknown_certificate() {
    let Some(_) = test_ca() else { return };
    let db = Arc::new(TestDatabase::create().await);
    let error = start(&db, "verify-full", None)
        .await
        .err()
        .expect("an untrusted certificate is refused");
    assert!(
        matches!(error, auth_core::Error::Unavailable(_)),
        "{error:?}"
    );
    let error = start(&db, "verify-ca", None)
        .await
        .err()
        .expect("verify-ca checks the chain too");
    assert!(
        matches!(error, auth_core::Error::Unavailable(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn require_encrypts_without_checking_and_disable_does_not_encrypt() {
    let Some(_) = test_ca() else { return };
    let db = Arc::new(TestDatabase::create().await);
    let app = start(&db, "require", None)
        .await
        .expect("require accepts any certificate");
    assert!(service_connections_use_tls(&db).await);
    drop(app);
    let other = Arc::new(TestDatabase::create().await);
    let _plain = start(&other, "disable", None).await.expect("disable");
    assert!(!service_connections_use_tls(&other).await);
}
