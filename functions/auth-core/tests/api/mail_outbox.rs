//! The outbox against mail servers that misbehave: away for longer than a day, speaking TLS
//! (STARTTLS and implicit) with a private CA, or presenting an untrusted certificate. Requests
//! never wait for any of them; mail is never lost.

use std::time::Duration;

use time::OffsetDateTime;

use crate::email::{app_with_mail, wait_until_outbox_is_empty};
use crate::helpers::{TestApp, spawn_app_with};
use crate::smtp::{SinkTls, SmtpSink, TestCa};

/// Waits until the worker has tried (and failed) at least once: a mail claimed, not sent.
async fn wait_for_a_failed_attempt(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app
        .outbox_rows("attempts > 0 AND sent_at IS NULL AND claim_id IS NULL")
        .await
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker tried within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_unsent_mail_older_than_a_day_survives_housekeeping_and_is_delivered_when_smtp_is_back()
{
    let mut sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "optional").await;
    app.signed_up("old@example.com").await;
    sink.wait_for("old@example.com", 1).await;
    wait_until_outbox_is_empty(&app).await;

    sink.stop().await;
    assert_eq!(app.request_reset("old@example.com").await.status, 202);
    wait_for_a_failed_attempt(&app).await;
    // Two days go by without a mail server (moved back in the database, not waited for).
    app.db
        .client()
        .await
        .execute(
            "UPDATE outbox SET created_at = created_at - interval '2 days', \
             sent_at = sent_at - interval '2 days'",
            &[],
        )
        .await
        .unwrap();
    app.auth
        .housekeeping(OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        app.outbox_rows("sent_at IS NOT NULL").await,
        0,
        "the mail sent two days ago is pruned"
    );
    assert_eq!(
        app.outbox_rows("sent_at IS NULL AND kind = 'password_reset'")
            .await,
        1,
        "the unsent one stays, however old"
    );

    sink.resume().await;
    let mail = sink.nth_mail("old@example.com", 2).await;
    assert!(mail.token("reset").is_some(), "{mail:?}");
    wait_until_outbox_is_empty(&app).await;
    assert_eq!(app.outbox_rows("link_token IS NOT NULL").await, 0);
}

async fn app_for_tls(sink: &SmtpSink, ca_file: Option<&str>) -> TestApp {
    let url = sink.tls_url();
    let mut settings = vec![
        ("SMTP_URL", url.as_str()),
        ("AUTH_EMAIL_VERIFICATION", "optional"),
        ("AUTH_IP_REGISTRATIONS_PER_HOUR", "0"),
    ];
    if let Some(ca_file) = ca_file {
        settings.push(("SMTP_CA_FILE", ca_file));
    }
    spawn_app_with(&settings).await
}

async fn mail_is_delivered_over(mode: SinkTls) {
    let ca = TestCa::new();
    let sink = SmtpSink::start_tls(mode, &ca).await;
    let app = app_for_tls(&sink, Some(&ca.ca_file())).await;
    app.signed_up("tls@example.com").await;
    let mail = sink.nth_mail("tls@example.com", 1).await;
    assert!(mail.tls, "the mail came over TLS ({mode:?})");
    assert!(mail.token("verify").is_some(), "{mail:?}");
}

#[tokio::test]
async fn mail_is_delivered_over_starttls_to_a_server_whose_certificate_smtp_ca_file_vouches_for() {
    mail_is_delivered_over(SinkTls::StartTls).await;
}

#[tokio::test]
async fn mail_is_delivered_over_implicit_tls_to_a_server_whose_certificate_smtp_ca_file_vouches_for()
 {
    mail_is_delivered_over(SinkTls::Implicit).await;
}

#[tokio::test]
async fn a_mail_server_with_an_untrusted_certificate_gets_no_mail_and_no_request_fails() {
    let ca = TestCa::new();
    let stranger = TestCa::new();
    for mode in [SinkTls::StartTls, SinkTls::Implicit] {
        let sink = SmtpSink::start_tls(mode, &ca).await;
        // Trusting another CA, and trusting the Mozilla roots (no SMTP_CA_FILE): both refuse it.
        for trusted in [Some(stranger.ca_file()), None] {
            let app = app_for_tls(&sink, trusted.as_deref()).await;
            let email = "wary@example.com";
            app.signed_up(email).await;
            assert_eq!(app.request_reset(email).await.status, 202);
            wait_for_a_failed_attempt(&app).await;
            // Another round of the worker's tries (the first retries come after 1 and 2 s).
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert!(
                sink.mails().is_empty(),
                "{mode:?}, {trusted:?}: nothing reached the server"
            );
            assert_eq!(
                app.outbox_rows("sent_at IS NULL AND rejected_at IS NULL")
                    .await,
                2,
                "{mode:?}, {trusted:?}: both mails wait in the outbox"
            );
        }
    }
}

