//! Outbound mail: the bodies of every message the service sends (plain text plus simple HTML,
//! the product name and the link, nothing remote), and the transport that delivers them: SMTP
//! through lettre, or the log when `SMTP_URL` is unset (development).

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Config, SmtpTls};
use crate::error::Error;

const PRODUCT: &str = "Latchkey";
/// How long one delivery may take (connect, TLS, the dialogue) before it counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// What a mail says; each kind has one body below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailKind {
    /// A link that verifies the address.
    VerifyEmail,
    /// Someone tried to register the address, which already has an account: no link.
    SignupAttempt,
    /// A link that sets a new password.
    PasswordReset,
    /// The password was just reset through a link.
    PasswordResetDone,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::VerifyEmail => "verify_email",
            MailKind::SignupAttempt => "signup_attempt",
            MailKind::PasswordReset => "password_reset",
            MailKind::PasswordResetDone => "password_reset_done",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            MailKind::VerifyEmail,
            MailKind::SignupAttempt,
            MailKind::PasswordReset,
            MailKind::PasswordResetDone,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// A rendered mail. No `Debug`: it holds a link's token.
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The link it carries, if any (for the development log).
    pub link: Option<String>,
}

/// The link for a token: the token travels in the fragment, which browsers never send to a
/// server nor put in a `Referer`.
pub fn link(public_url: &str, page: &str, token: &str) -> String {
    format!("{public_url}/{page}/#token={token}")
}

/// Renders a mail of `kind`. `token` is required by the kinds that carry a link.
pub fn render(kind: MailKind, public_url: &str, token: Option<&str>) -> Result<Rendered, Error> {
    let need_token = || token.ok_or_else(|| Error::internal("rendering a mail", "no token"));
    let sign_in = format!("{public_url}/");
    let (subject, lines, action) = match kind {
        MailKind::VerifyEmail => (
            format!("Verify your email for {PRODUCT}"),
            vec![
                format!("Please confirm that this address belongs to your {PRODUCT} account."),
                "The link works once, for 24 hours.".to_owned(),
                "If you did not sign up, ignore this mail.".to_owned(),
            ],
            Some(("Verify my email", link(public_url, "verify", need_token()?))),
        ),
        MailKind::SignupAttempt => (
            format!("Someone tried to sign up for {PRODUCT} with your address"),
            vec![
                format!(
                    "Someone tried to create a {PRODUCT} account with this address, which already has one."
                ),
                "If it was you, sign in instead, or reset your password from the sign-in page.".to_owned(),
                "If it was not you, nothing changed and you need not do anything.".to_owned(),
            ],
            Some(("Sign in", sign_in)),
        ),
        MailKind::PasswordReset => (
            format!("Reset your {PRODUCT} password"),
            vec![
                format!("Someone asked to reset the password of your {PRODUCT} account."),
                "The link works once, for 30 minutes; a newer link or a password change cancels it.".to_owned(),
                "If it was not you, ignore this mail: your password stays as it is.".to_owned(),
            ],
            Some(("Choose a new password", link(public_url, "reset", need_token()?))),
        ),
        MailKind::PasswordResetDone => (
            format!("Your {PRODUCT} password was reset"),
            vec![
                format!("The password of your {PRODUCT} account was just reset, and every session was signed out."),
                "If it was not you, reset your password again at once from the sign-in page.".to_owned(),
            ],
            Some(("Sign in", sign_in)),
        ),
    };
    let mut text = lines.join("\n\n");
    let mut html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body style=\"font-family:sans-serif;line-height:1.5;color:#1a1a1a\"><h1 style=\"font-size:1.25em\">{PRODUCT}</h1>",
        escape(&subject)
    );
    for line in &lines {
        html.push_str(&format!("<p>{}</p>", escape(line)));
    }
    let link = action.as_ref().map(|(_, url)| url.clone());
    if let Some((label, url)) = action {
        text.push_str(&format!("\n\n{label}: {url}\n"));
        html.push_str(&format!(
            "<p><a href=\"{0}\">{1}</a></p><p style=\"font-size:0.9em\">Or paste this address into your browser: {0}</p>",
            escape(&url),
            escape(label)
        ));
    }
    text.push_str(&format!("\n-- \n{PRODUCT}\n"));
    html.push_str("</body></html>");
    let link = match kind {
        MailKind::VerifyEmail | MailKind::PasswordReset => link,
        MailKind::SignupAttempt | MailKind::PasswordResetDone => None,
    };
    Ok(Rendered {
        subject,
        text,
        html,
        link,
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Why a delivery failed.
#[derive(Debug)]
pub enum SendError {
    /// Worth another try later (the server is away, a 4xx answer).
    Transient(String),
    /// The server refused this mail for good (a 5xx answer): retrying would not help.
    Permanent(String),
}

/// Delivers rendered mail.
pub struct Mailer {
    from: Mailbox,
    /// `None` without `SMTP_URL`: each mail goes to the log, link included (development only).
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
}

impl Mailer {
    pub fn from_config(config: &Config) -> Result<Self, Error> {
        let from: Mailbox = config.mail_from.parse().map_err(|_| Error::Config {
            variable: "MAIL_FROM",
            message: "expected a mailbox".to_owned(),
        })?;
        let Some(smtp) = &config.smtp else {
            return Ok(Mailer { from, smtp: None });
        };
        let tls_parameters = || {
            let builder = TlsParameters::builder(smtp.host.clone());
            // SMTP_CA_FILE replaces the Mozilla roots, as DB_CA_FILE does for the database: a
            // private CA is trusted for this server only, and nothing else is.
            let builder = match &smtp.ca_pem {
                None => builder,
                Some(pem) => builder
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(Certificate::from_pem(pem).map_err(|_| {
                        Error::Config {
                            variable: "SMTP_CA_FILE",
                            message: "expected PEM certificates".to_owned(),
                        }
                    })?),
            };
            builder
                .build()
                .map_err(|e| Error::internal("preparing SMTP TLS", e))
        };
        let tls = match smtp.tls {
            SmtpTls::Wrapper => Tls::Wrapper(tls_parameters()?),
            SmtpTls::StartTlsRequired => Tls::Required(tls_parameters()?),
            SmtpTls::StartTlsOpportunistic => Tls::Opportunistic(tls_parameters()?),
        };
        // EHLO names the sender's domain rather than this machine's (unknown in a container).
        let hello = ClientId::Domain(from.email.domain().to_owned());
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.port)
            .tls(tls)
            .hello_name(hello)
            .timeout(Some(SEND_TIMEOUT));
        if let Some((user, password)) = &smtp.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Mailer {
            from,
            smtp: Some(builder.build()),
        })
    }

    pub async fn send(&self, to: &str, mail: &Rendered) -> Result<(), SendError> {
        match &self.smtp {
            None => {
                // Deliberate: without a mail server this is how a developer follows a link.
                tracing::info!(
                    to,
                    subject = %mail.subject,
                    link = mail.link.as_deref().unwrap_or("-"),
                    "mail (SMTP_URL is unset, so it is logged instead of sent)"
                );
                Ok(())
            }
            Some(transport) => {
                let to: Mailbox = to
                    .parse()
                    .map_err(|_| SendError::Permanent("not a mailbox".to_owned()))?;
                let message = Message::builder()
                    .from(self.from.clone())
                    .to(to)
                    .subject(mail.subject.clone())
                    .multipart(MultiPart::alternative_plain_html(
                        mail.text.clone(),
                        mail.html.clone(),
                    ))
                    .map_err(|e| SendError::Permanent(e.to_string()))?;
                // lettre's own timeout is per read or write: a server that drips its replies
                // could hold a send far longer, so the whole delivery gets one deadline too.
                match tokio::time::timeout(SEND_TIMEOUT, transport.send(message)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
                    Ok(Err(e)) => Err(SendError::Transient(e.to_string())),
                    Err(_) => Err(SendError::Transient(format!(
                        "no complete delivery within {} s",
                        SEND_TIMEOUT.as_secs()
                    ))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_carry_the_token_in_the_fragment_and_bodies_hold_nothing_remote() {
        let mail = render(
            MailKind::PasswordReset,
            "https://app.example.com",
            Some("abc_-1"),
        )
        .unwrap();
        assert_eq!(
            mail.link.as_deref(),
            Some("https://app.example.com/reset/#token=abc_-1")
        );
        assert!(
            mail.text
                .contains("https://app.example.com/reset/#token=abc_-1")
        );
        assert!(
            mail.html
                .contains("https://app.example.com/reset/#token=abc_-1")
        );
        for kind in [
            MailKind::VerifyEmail,
            MailKind::SignupAttempt,
            MailKind::PasswordReset,
            MailKind::PasswordResetDone,
        ] {
            let mail = render(kind, "https://app.example.com", Some("t")).unwrap();
            assert!(mail.text.contains(PRODUCT) && mail.html.contains(PRODUCT));
            assert!(!mail.html.contains("<img") && !mail.html.contains("src="));
            assert_eq!(MailKind::parse(kind.as_str()), Some(kind));
        }
        assert!(
            render(MailKind::SignupAttempt, "https://a.example", None)
                .unwrap()
                .link
                .is_none()
        );
        assert!(render(MailKind::VerifyEmail, "https://a.example", None).is_err());
    }
}
