//! The crate's one error type, and its mapping to RFC 9457 problem documents.
//!
//! A client sees only the `code`, a fixed title and a fixed detail written here. Causes (database
//! errors, library messages) travel in the response's extensions to the logging middleware, which
//! writes them next to the request id; they never reach the body.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{ToResponse, ToSchema};

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
    #[error("email unverified")]
    EmailUnverified,
    #[error("invalid link")]
    InvalidLink,
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
    #[error("the request took longer than HTTP_REQUEST_TIMEOUT_MS")]
    Timeout,
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

    /// The machine code a client branches on; its status, title and detail come from
    /// [`ErrorCode::row`].
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Error::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Error::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Error::Validation(_) => ErrorCode::ValidationFailed,
            Error::EmailTaken => ErrorCode::EmailTaken,
            Error::InvalidCredentials => ErrorCode::InvalidCredentials,
            Error::InvalidToken { .. } => ErrorCode::InvalidToken,
            Error::WrongPassword => ErrorCode::WrongPassword,
            Error::ForbiddenOrigin => ErrorCode::ForbiddenOrigin,
            Error::EmailUnverified => ErrorCode::EmailUnverified,
            Error::InvalidLink => ErrorCode::InvalidLink,
            Error::NotFound => ErrorCode::NotFound,
            Error::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Error::TooManyRequests { .. } => ErrorCode::TooManyRequests,
            Error::Overloaded { .. } => ErrorCode::Overloaded,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Timeout => ErrorCode::Timeout,
            Error::Config { .. } | Error::Internal { .. } => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code().row().status
    }

    /// The row's detail, except where the error itself says more precisely what was wrong.
    fn detail(&self) -> &'static str {
        match self {
            Error::InvalidRequest(detail) => detail,
            Error::InvalidToken {
                presented: false, ..
            } => "This request needs a valid token.",
            other => other.code().row().detail,
        }
    }

    /// Seconds for `Retry-After`: the contract promises it on every 429, `overloaded` and
    /// `timeout`; an outage heals on its own time, so `unavailable` says nothing.
    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::TooManyRequests { retry_after_secs }
            | Error::Overloaded { retry_after_secs } => Some((*retry_after_secs).max(1)),
            Error::Timeout => Some(1),
            _ => None,
        }
    }
}

/// Every `code` of the contract (`docs/api.md`), in its order. The OpenAPI document's enum is
/// derived from this type, so the two cannot drift apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ProblemCode)]
pub enum ErrorCode {
    InvalidRequest,
    UnsupportedMediaType,
    PayloadTooLarge,
    ValidationFailed,
    EmailTaken,
    InvalidCredentials,
    InvalidToken,
    WrongPassword,
    ForbiddenOrigin,
    EmailUnverified,
    InvalidLink,
    NotFound,
    MethodNotAllowed,
    TooManyRequests,
    Overloaded,
    Unavailable,
    Timeout,
    Internal,
}

/// What a client is told for one code.
pub struct ErrorRow {
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: &'static str,
}

const fn row(status: StatusCode, title: &'static str, detail: &'static str) -> ErrorRow {
    ErrorRow {
        status,
        title,
        detail,
    }
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::InvalidRequest,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::PayloadTooLarge,
        ErrorCode::ValidationFailed,
        ErrorCode::EmailTaken,
        ErrorCode::InvalidCredentials,
        ErrorCode::InvalidToken,
        ErrorCode::WrongPassword,
        ErrorCode::ForbiddenOrigin,
        ErrorCode::EmailUnverified,
        ErrorCode::InvalidLink,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::TooManyRequests,
        ErrorCode::Overloaded,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::Internal,
    ];

    /// The one table of the error contract: status, title and detail per code.
    pub const fn row(self) -> ErrorRow {
        use StatusCode as S;
        match self {
            ErrorCode::InvalidRequest => row(
                S::BAD_REQUEST,
                "Invalid request",
                "The request body is not valid JSON.",
            ),
            ErrorCode::UnsupportedMediaType => row(
                S::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                "Send the body as JSON with 'Content-Type: application/json'.",
            ),
            ErrorCode::PayloadTooLarge => row(
                S::PAYLOAD_TOO_LARGE,
                "Payload too large",
                "The request body is larger than 16 KiB.",
            ),
            ErrorCode::ValidationFailed => row(
                S::UNPROCESSABLE_ENTITY,
                "Validation failed",
                "Some fields were rejected; see 'errors'.",
            ),
            ErrorCode::EmailTaken => row(
                S::CONFLICT,
                "Email already registered",
                "An account with this email already exists.",
            ),
            ErrorCode::InvalidCredentials => row(
                S::UNAUTHORIZED,
                "Invalid credentials",
                "The email or password is incorrect.",
            ),
            ErrorCode::InvalidToken => row(
                S::UNAUTHORIZED,
                "Invalid token",
                "The token is missing, malformed, expired or revoked.",
            ),
            ErrorCode::WrongPassword => {
                row(S::FORBIDDEN, "Wrong password", "The password is incorrect.")
            }
            ErrorCode::ForbiddenOrigin => row(
                S::FORBIDDEN,
                "Forbidden origin",
                "This origin may not use the refresh cookie.",
            ),
            ErrorCode::EmailUnverified => row(
                S::FORBIDDEN,
                "Email not verified",
                "Verify your email with the link we sent, or ask for a new one.",
            ),
            ErrorCode::InvalidLink => row(
                S::BAD_REQUEST,
                "Invalid link",
                "This link is unknown, used, expired or replaced by a newer one.",
            ),
            ErrorCode::NotFound => row(S::NOT_FOUND, "Not found", "There is nothing here."),
            ErrorCode::MethodNotAllowed => row(
                S::METHOD_NOT_ALLOWED,
                "Method not allowed",
                "This method is not allowed on this resource.",
            ),
            ErrorCode::TooManyRequests => row(
                S::TOO_MANY_REQUESTS,
                "Too many requests",
                "Too many attempts; retry after the number of seconds in Retry-After.",
            ),
            ErrorCode::Overloaded => row(
                S::SERVICE_UNAVAILABLE,
                "Overloaded",
                "The service is busy; retry after the number of seconds in Retry-After.",
            ),
            ErrorCode::Unavailable => row(
                S::SERVICE_UNAVAILABLE,
                "Service unavailable",
                "The service cannot reach its database; try again shortly.",
            ),
            ErrorCode::Timeout => row(
                S::SERVICE_UNAVAILABLE,
                "Timeout",
                "The request took too long and was abandoned; retry after the number of seconds in Retry-After.",
            ),
            ErrorCode::Internal => row(
                S::INTERNAL_SERVER_ERROR,
                "Internal server error",
                "Something went wrong on our side; quote the request id when reporting it.",
            ),
        }
    }
}

/// The cause of a 5xx, carried to the logging middleware in the response extensions.
#[derive(Clone, Debug)]
pub struct ErrorCause(pub String);

/// An RFC 9457 problem document, the body of every error.
#[derive(Serialize, ToSchema, ToResponse)]
#[response(
    description = "A problem document; branch on `code`",
    content_type = "application/problem+json"
)]
pub struct Problem<'a> {
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub kind: &'static str,
    #[schema(example = "Invalid token")]
    pub title: &'static str,
    #[schema(example = 401)]
    pub status: u16,
    /// The machine-readable reason.
    pub code: ErrorCode,
    pub detail: &'static str,
    /// For 422: the field names with the reasons each was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, Vec<String>>>)]
    pub errors: Option<&'a FieldErrors>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = self.code();
        let row = code.row();
        let problem = Problem {
            kind: "about:blank",
            title: row.title,
            status: row.status.as_u16(),
            code,
            detail: self.detail(),
            errors: match &self {
                Error::Validation(errors) => Some(errors),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (row.status, body).into_response();
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
            _ => {}
        }
        if let Some(seconds) = self.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if row.status.is_server_error() {
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
/// rather than a bug or a misconfiguration (500, or a fatal start-up error). Decided by the
/// error's kind and SQLSTATE, never by its text.
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
    // The connection is gone, or the socket failed (refused, reset, timed out: tokio-postgres
    // reports a connect timeout as an I/O error of kind TimedOut).
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
    false
}

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Self {
        if is_outage(&error) {
            return Error::Unavailable(Box::new(error));
        }
        // The server's own message is what an operator needs; Display alone says "db error".
        // Its DETAIL is left out: it quotes row contents (an email, a hash) into the log.
        let described = match error.as_db_error() {
            Some(db) => format!(
                "{} ({}){}{}",
                db.message(),
                db.code().code(),
                db.table()
                    .map(|t| format!(" table {t}"))
                    .unwrap_or_default(),
                db.constraint()
                    .map(|c| format!(" constraint {c}"))
                    .unwrap_or_default()
            ),
            None => cause_chain(&error),
        };
        Error::internal("database", described)
    }
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
