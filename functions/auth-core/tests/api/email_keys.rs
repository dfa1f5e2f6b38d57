//! `Idempotency-Key` on the four email requests: a retry whose first answer was lost gets that
//! answer (a used link included: 204, not `invalid_link`), the work is done once, and the key
//! used for another request gets 422.

use reqwest::Method;
use serde_json::{Value, json};

use crate::email::{NEW_PASSWORD, app_with_mail, wait_until_outbox_is_empty};
use crate::helpers::{Reply, STRONG_PASSWORD, TestApp};
use crate::idempotency::assert_key_refused;
use crate::smtp::SmtpSink;

const VERIFY: &str = "/api/v1/auth/verify-email";
const RESEND: &str = "/api/v1/auth/verify-email/resend";
const RESET: &str = "/api/v1/auth/password-reset";
const CONFIRM: &str = "/api/v1/auth/password-reset/confirm";

impl TestApp {
    async fn keyed_post(&self, path: &str, key: &str, body: &Value) -> Reply {
        self.keyed(Method::POST, path, None, key, Some(body)).await
    }

    async fn mails_to(&self, sink: &SmtpSink, to: &str) -> usize {
        wait_until_outbox_is_empty(self).await;
        sink.mails().iter().filter(|mail| mail.to == to).count()
    }
}

#[tokio::test]
async fn a_verification_retried_with_its_key_gets_204_again_not_invalid_link() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "optional").await;
    let registered = app.signed_up("ada@example.com").await;
    let token = sink
        .nth_mail("ada@example.com", 1)
        .await
        .token("verify")
        .unwrap();
    let body = json!({ "token": token });

    let first = app.keyed_post(VERIFY, "verify-key-1", &body).await;
    assert_eq!(first.status, 204, "{}", first.text);
    let retry = app.keyed_post(VERIFY, "verify-key-1", &body).await;
    assert_eq!(retry.status, 204, "{}", retry.text);
    assert_eq!(retry.text, first.text);
    // The link itself is used: without the key, or with another one, it is refused as ever.
    app.verify(&token).await.assert_problem(400, "invalid_link");
    app.keyed_post(VERIFY, "verify-key-2", &body)
        .await
        .assert_problem(400, "invalid_link");
    let me = app.me(&registered.access_token()).await;
    assert_eq!(me.body["email_verified"], true);
    let refreshed = app.refresh(&registered.refresh_token()).await;
    let events = app.event_types(&refreshed.access_token()).await;
    assert_eq!(
        events.iter().filter(|e| *e == "email_verified").count(),
        1,
        "{events:?}"
    );
}

#[tokio::test]
async fn a_reset_confirmation_retried_with_its_key_gets_204_and_resets_once() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "off").await;
    app.signed_up("bea@example.com").await;
    app.request_reset("bea@example.com").await;
    let token = sink
        .nth_mail("bea@example.com", 1)
        .await
        .token("reset")
        .unwrap();
    let body = json!({ "token": token, "new_password": NEW_PASSWORD });

    let first = app.keyed_post(CONFIRM, "confirm-key", &body).await;
    assert_eq!(first.status, 204, "{}", first.text);
    let retry = app.keyed_post(CONFIRM, "confirm-key", &body).await;
    assert_eq!(retry.status, 204, "{}", retry.text);
    // The same key and link with another password is another request.
    let other = json!({ "token": token, "new_password": "yet another fine passphrase" });
    assert_key_refused(&app.keyed_post(CONFIRM, "confirm-key", &other).await);
    // Without the key the used link is refused.
    app.confirm_reset(&token, NEW_PASSWORD)
        .await
        .assert_problem(400, "invalid_link");

    let signed_in = app.login("bea@example.com", NEW_PASSWORD).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.text);
    let events = app.event_types(&signed_in.access_token()).await;
    assert_eq!(
        events.iter().filter(|e| *e == "password_reset").count(),
        1,
        "{events:?}"
    );
    // The link and one "your password was reset" notice.
    assert_eq!(app.mails_to(&sink, "bea@example.com").await, 2);
}

#[tokio::test]
async fn concurrent_reset_confirmations_with_one_key_all_get_204_and_reset_once() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "off").await;
    app.signed_up("cai@example.com").await;
    app.request_reset("cai@example.com").await;
    let token = sink
        .nth_mail("cai@example.com", 1)
        .await
        .token("reset")
        .unwrap();
    let body = json!({ "token": token, "new_password": NEW_PASSWORD });
    let replies =
        futures::future::join_all((0..4).map(|_| app.keyed_post(CONFIRM, "race-key", &body))).await;
    for reply in &replies {
        assert_eq!(reply.status, 204, "{}", reply.text);
    }
    let signed_in = app.login("cai@example.com", NEW_PASSWORD).await;
    let events = app.event_types(&signed_in.access_token()).await;
    assert_eq!(
        events.iter().filter(|e| *e == "password_reset").count(),
        1,
        "{events:?}"
    );
    assert_eq!(app.mails_to(&sink, "cai@example.com").await, 2);
}

#[tokio::test]
async fn a_reset_request_retried_with_its_key_mails_once_and_keeps_the_first_link_alive() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "off").await;
    app.signed_up("dee@example.com").await;
    let body = json!({"email": "dee@example.com"});
    // More retries than the per-email budget of five: none of them counts.
    for _ in 0..7 {
        let reply = app.keyed_post(RESET, "reset-key", &body).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        assert_eq!(reply.body, json!({"status": "reset_sent"}));
    }
    assert_eq!(app.mails_to(&sink, "dee@example.com").await, 1);
    // A retry without the key would have superseded it; with the key the mailed link works.
    let token = sink
        .nth_mail("dee@example.com", 1)
        .await
        .token("reset")
        .unwrap();
    assert_eq!(app.confirm_reset(&token, NEW_PASSWORD).await.status, 204);
    assert_key_refused(
        &app.keyed_post(RESET, "reset-key", &json!({"email": "eli@example.com"}))
            .await,
    );
    // An unknown address answers alike, and its retry too.
    let unknown = json!({"email": "nobody@example.com"});
    let first = app.keyed_post(RESET, "unknown-key", &unknown).await;
    let retry = app.keyed_post(RESET, "unknown-key", &unknown).await;
    assert_eq!((first.status, retry.status), (202, 202));
    assert_eq!(first.text, retry.text);
}

#[tokio::test]
async fn a_resend_retried_with_its_key_mails_once() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "required").await;
    assert_eq!(
        app.register("fin@example.com", STRONG_PASSWORD)
            .await
            .status,
        202
    );
    let body = json!({"email": "fin@example.com"});
    for _ in 0..7 {
        let reply = app.keyed_post(RESEND, "resend-key", &body).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        assert_eq!(reply.body, json!({"status": "verification_sent"}));
    }
    // The registration's link and one resend.
    assert_eq!(app.mails_to(&sink, "fin@example.com").await, 2);
    assert_key_refused(
        &app.keyed_post(RESEND, "resend-key", &json!({"email": "gil@example.com"}))
            .await,
    );
}

#[tokio::test]
async fn a_malformed_key_is_a_bad_request_on_every_email_request() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "optional").await;
    app.signed_up("hoa@example.com").await;
    let token = sink
        .nth_mail("hoa@example.com", 1)
        .await
        .token("verify")
        .unwrap();
    let bad = "k".repeat(256);
    let cases = [
        (VERIFY, json!({ "token": token })),
        (RESEND, json!({"email": "hoa@example.com"})),
        (RESET, json!({"email": "hoa@example.com"})),
        (
            CONFIRM,
            json!({ "token": "A".repeat(43), "new_password": NEW_PASSWORD }),
        ),
    ];
    for (path, body) in &cases {
        app.keyed_post(path, &bad, body)
            .await
            .assert_problem(400, "invalid_request");
    }
    // Nothing happened: the link still verifies, and only the registration's mail went out.
    assert_eq!(app.verify(&token).await.status, 204);
    assert_eq!(app.mails_to(&sink, "hoa@example.com").await, 1);
}
