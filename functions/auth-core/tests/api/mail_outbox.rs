//! The outbox against mail servers that misbehave: away for longer than a day. Requests never
//! wait for them; mail is never lost.

use std::time::Duration;

use time::OffsetDateTime;

use crate::email::{app_with_mail, wait_until_outbox_is_empty};
use crate::helpers::TestApp;
use crate::smtp::SmtpSink;

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

