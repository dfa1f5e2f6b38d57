//! The crate's one error type, and its mapping to RFC 9457 problem documents.
//!
//! A client sees only the `code`, a fixed title and a fixed detail written here. Causes (database
//! errors, library messages) travel in the response's extensions to the logging middleware, which
//! writes them next to the request id; they never reach the body.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Field name to the list of readable reasons it was rejected, for 422 answers.
pub type FieldErrors = BTreeMap<&'static str, Vec<String>>;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("validation failed")]
    Validation(FieldErrors),
    #[error("email taken")]
    EmailTaken,
    #[error("invalid credentials")]
    InvalidCredentials,
    /// `presented` is false when no token came with the request at all.
    #[error("invalid token: {reason}")]
    InvalidToken {
        presented: bool,
        reason: &'static str,
    },
    #[error("wrong password")]
    WrongPassword,
    #[error("forbidden origin")]
    ForbiddenOrigin,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("password hashing pool is full")]
    Overloaded { retry_after_secs: u64 },
    #[error("database unavailable: {0}")]
    Unavailable(BoxError),
    #[error("{variable}: {message}")]
    Config {
        variable: &'static str,
        message: String,
    },
    #[error("{context}")]
    Internal {
        context: &'static str,
        #[source]
        source: BoxError,
    },
}

impl Error {
    pub fn internal(context: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Internal {
            context,
            source: source.into(),
        }
    }

    pub fn token(reason: &'static str) -> Self {
        Error::InvalidToken {
            presented: true,
            reason,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::EmailTaken => StatusCode::CONFLICT,
            Error::InvalidCredentials | Error::InvalidToken { .. } => StatusCode::UNAUTHORIZED,
            Error::WrongPassword | Error::ForbiddenOrigin => StatusCode::FORBIDDEN,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Overloaded { .. } | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Config { .. } | Error::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::PayloadTooLarge => "payload_too_large",
            Error::Validation(_) => "validation_failed",
            Error::EmailTaken => "email_taken",
            Error::InvalidCredentials => "invalid_credentials",
            Error::InvalidToken { .. } => "invalid_token",
            Error::WrongPassword => "wrong_password",
            Error::ForbiddenOrigin => "forbidden_origin",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::TooManyRequests { .. } => "too_many_requests",
            Error::Overloaded { .. } => "overloaded",
            Error::Unavailable(_) => "unavailable",
            Error::Config { .. } | Error::Internal { .. } => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "Invalid request",
            Error::UnsupportedMediaType => "Unsupported media type",
            Error::PayloadTooLarge => "Payload too large",
            Error::Validation(_) => "Validation failed",
            Error::EmailTaken => "Email already registered",
            Error::InvalidCredentials => "Invalid credentials",
            Error::InvalidToken { .. } => "Invalid token",
            Error::WrongPassword => "Wrong password",
            Error::ForbiddenOrigin => "Forbidden origin",
            Error::NotFound => "Not found",
            Error::MethodNotAllowed => "Method not allowed",
            Error::TooManyRequests { .. } => "Too many requests",
            Error::Overloaded { .. } => "Overloaded",
            Error::Unavailable(_) => "Service unavailable",
            Error::Config { .. } | Error::Internal { .. } => "Internal server error",
        }
    }

    fn detail(&self) -> &'static str {
        match self {
            Error::InvalidRequest(detail) => detail,
            Error::UnsupportedMediaType => {
                "Send the body as JSON with 'Content-Type: application/json'."
            }
            Error::PayloadTooLarge => "The request body is larger than 16 KiB.",
            Error::Validation(_) => "Some fields were rejected; see 'errors'.",
            Error::EmailTaken => "An account with this email already exists.",
            Error::InvalidCredentials => "The email or password is incorrect.",
            Error::InvalidToken {
                presented: false, ..
            } => "This request needs a valid token.",
            Error::InvalidToken { .. } => "The token is missing, malformed, expired or revoked.",
            Error::WrongPassword => "The password is incorrect.",
            Error::ForbiddenOrigin => "This origin may not use the refresh cookie.",
            Error::NotFound => "There is nothing here.",
            Error::MethodNotAllowed => "This method is not allowed on this resource.",
            Error::TooManyRequests { .. } => {
                "Too many attempts; retry after the number of seconds in Retry-After."
            }
            Error::Overloaded { .. } => {
                "The service is busy; retry after the number of seconds in Retry-After."
            }
            Error::Unavailable(_) => "The service cannot reach its database; try again shortly.",
            Error::Config { .. } | Error::Internal { .. } => {
                "Something went wrong on our side; quote the request id when reporting it."
            }
        }
    }
}

/// The cause of a 5xx, carried to the logging middleware in the response extensions.
#[derive(Clone, Debug)]
pub struct ErrorCause(pub String);

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    code: &'static str,
    detail: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a FieldErrors>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let problem = Problem {
            kind: "about:blank",
            title: self.title(),
            status: status.as_u16(),
            code: self.code(),
            detail: self.detail(),
            errors: match &self {
                Error::Validation(errors) => Some(errors),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            Error::InvalidToken {
                presented: true, ..
            } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            Error::InvalidToken {
                presented: false, ..
            }
            | Error::InvalidCredentials => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Error::TooManyRequests { retry_after_secs }
            | Error::Overloaded { retry_after_secs } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from((*retry_after_secs).max(1)),
                );
            }
            _ => {}
        }
        if status.is_server_error() {
            response
                .extensions_mut()
                .insert(ErrorCause(cause_chain(&self)));
        }
        response
    }
}

/// The error and its sources on one line, for the log.
pub fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            // Failing to open a connection means the database cannot serve us (down, restarting,
            // being restored), except when it refuses our credentials: that is configuration.
            deadpool_postgres::PoolError::Backend(error)
                if error
                    .code()
                    .is_some_and(|code| code.code().starts_with("28")) =>
            {
                Error::internal("database refused the credentials", error)
            }
            deadpool_postgres::PoolError::Backend(error) => Error::Unavailable(Box::new(error)),
            deadpool_postgres::PoolError::Timeout(_) | deadpool_postgres::PoolError::Closed => {
                Error::Unavailable(Box::new(error))
            }
            other => Error::internal("database pool", other),
        }
    }
}

/// Whether a database error means "the database cannot serve us right now" (503, retry later)
/// rather than a bug or a misconfiguration (500, or a fatal start-up error).
fn is_outage(error: &tokio_postgres::Error) -> bool {
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        // 08: connection exceptions; 53: out of resources (too many connections); 57P0x: the
        // server is shutting down or starting; 57014/55P03: our statement or lock timeout fired;
        // 25006: a read-only transaction, what a demoted writer answers during a failover.
        return code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57P0")
            || matches!(code, "57014" | "55P03" | "25006");
    }
    if error.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    error.to_string().contains("timeout")
}

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Self {
        if is_outage(&error) {
            return Error::Unavailable(Box::new(error));
        }
        // The server's own message is what an operator needs; Display alone says "db error".
        let described = match error.as_db_error() {
            Some(db) => format!(
                "{} ({}): {}",
                db.message(),
                db.code().code(),
                db.detail().unwrap_or("")
            ),
            None => cause_chain(&error),
        };
        Error::internal("database", described)
    }
}
