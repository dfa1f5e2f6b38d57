//! The outbox against mail servers that misbehave: away for longer than a day, speaking TLS
//! (STARTTLS and implicit) with a private CA, presenting an untrusted certificate, or accepting
//! connections and never answering. Requests never wait for any of them; mail is never lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use crate::email::{app_with_mail, wait_until_outbox_is_empty};
use crate::helpers::{STRONG_PASSWORD, TestApp, spawn_app_with};
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

/// A server that accepts connections and never says a word; it counts the connections.
struct SilentServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentServer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        SilentServer {
            port,
            accepted,
            task,
        }
    }

    /// Closes the listener and every connection it holds.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

#[tokio::test]
async fn a_mail_server_that_never_answers_holds_up_no_request_and_mail_follows_from_a_good_one() {
    let silent = SilentServer::start().await;
    let port = silent.port;
    let app = spawn_app_with(&[
        ("SMTP_URL", &format!("smtp://127.0.0.1:{port}")),
        ("AUTH_EMAIL_VERIFICATION", "optional"),
        ("AUTH_IP_REGISTRATIONS_PER_HOUR", "0"),
    ])
    .await;
    app.signed_up("ray@example.com").await;
    // The worker is now stuck in a conversation that never starts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while silent.accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Each answer comes back well within the 20 s the worker may wait for the server: the bound
    // is a correctness check (nothing waits for the mail server), not a speed test.
    let bound = Duration::from_secs(10);
    let timed = |started: std::time::Instant, what: &str| {
        let took = started.elapsed();
        assert!(
            took < bound,
            "{what} took {took:?} while the mail server hangs"
        );
    };
    let started = std::time::Instant::now();
    assert_eq!(
        app.register("sam@example.com", STRONG_PASSWORD)
            .await
            .status,
        201
    );
    timed(started, "a registration");
    let started = std::time::Instant::now();
    assert_eq!(app.request_reset("ray@example.com").await.status, 202);
    timed(started, "a reset request");
    let started = std::time::Instant::now();
    let resent = app
        .post_json(
            "/api/v1/auth/verify-email/resend",
            &json!({"email": "sam@example.com"}),
        )
        .await;
    assert_eq!(resent.status, 202);
    timed(started, "a resend");

    // A working server takes the hanging one's place: every mail arrives, once.
    silent.stop().await;
    let sink = SmtpSink::start_on(port).await;
    let ray = sink.wait_for("ray@example.com", 2).await;
    assert!(ray.iter().any(|mail| mail.token("verify").is_some()));
    assert!(ray.iter().any(|mail| mail.token("reset").is_some()));
    sink.wait_for("sam@example.com", 2).await;
    wait_until_outbox_is_empty(&app).await;
    assert_eq!(sink.mails().len(), 4, "each mail once: {:?}", sink.mails());
}
