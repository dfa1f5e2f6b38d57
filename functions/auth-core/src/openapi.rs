//! The OpenAPI 3.1 document, generated from the handlers' annotations. A copy is checked in at
//! `openapi.json`; a test fails when the two differ (`make openapi` rewrites the copy).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

use crate::http;
use crate::service::{EventView, Grant, SessionView, UserView};

/// An RFC 9457 problem document, the body of every error.
#[derive(ToSchema, ToResponse)]
#[response(
    description = "A problem document; branch on `code`",
    content_type = "application/problem+json"
)]
#[allow(dead_code)] // Describes the JSON that `error::Error` writes; never built as a value.
pub struct Problem {
    #[schema(rename = "type", example = "about:blank")]
    kind: String,
    #[schema(example = "Invalid token")]
    title: String,
    #[schema(example = 401)]
    status: u16,
    /// The machine-readable reason.
    #[schema(value_type = String, example = "invalid_token")]
    code: ProblemCode,
    detail: String,
    /// For 422: the field names with the reasons each was rejected.
    errors: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ProblemCode {
    InvalidRequest,
    UnsupportedMediaType,
    PayloadTooLarge,
    ValidationFailed,
    EmailTaken,
    InvalidCredentials,
    InvalidToken,
    WrongPassword,
    ForbiddenOrigin,
    NotFound,
    MethodNotAllowed,
    TooManyRequests,
    Overloaded,
    Unavailable,
    Internal,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Latchkey",
        description = "Email and password accounts with JWT sessions. Every error is application/problem+json with a machine-readable `code`; every response carries X-Request-Id; every 401 carries WWW-Authenticate: Bearer; every 429 and 503 carries Retry-After (503 `unavailable` may not).",
        license(name = "Apache-2.0")
    ),
    paths(
        http::register, http::login, http::refresh, http::logout,
        http::me, http::change_password, http::delete_account, http::events,
        http::sessions, http::revoke_session, http::revoke_other_sessions,
        http::jwks, http::openapi, http::healthz, http::readyz, http::metrics,
    ),
    components(
        schemas(Grant, UserView, SessionView, EventView, Problem, ProblemCode,
            http::Credentials, http::RefreshBody, http::LogoutBody, http::ChangePassword, http::DeleteAccount,
            http::SessionList, http::EventList),
        responses(Problem),
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Registration, sign-in, token refresh and sign-out"),
        (name = "account", description = "The signed-in account"),
        (name = "sessions", description = "The account's sessions"),
        (name = "keys", description = "Public keys for offline token verification"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.json");

    #[test]
    fn the_checked_in_document_matches_the_code() {
        let generated = document().to_pretty_json().unwrap() + "\n";
        if std::env::var("UPDATE_OPENAPI").as_deref() == Ok("1") {
            std::fs::write(CHECKED_IN, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
        assert!(
            checked_in == generated,
            "openapi.json is out of date: run `make openapi` and commit the result"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_and_covers_every_route() {
        let value = serde_json::to_value(document()).unwrap();
        assert!(value["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = value["paths"].as_object().unwrap();
        for path in [
            "/api/v1/auth/register",
            "/api/v1/auth/login",
            "/api/v1/auth/refresh",
            "/api/v1/auth/logout",
            "/api/v1/me",
            "/api/v1/me/password",
            "/api/v1/me/events",
            "/api/v1/sessions",
            "/api/v1/sessions/{id}",
            "/.well-known/jwks.json",
            "/api/v1/openapi.json",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(paths.contains_key(path), "{path} is not documented");
        }
        let codes = &value["components"]["schemas"]["ProblemCode"]["enum"];
        for code in [
            "invalid_request",
            "validation_failed",
            "too_many_requests",
            "overloaded",
            "unavailable",
        ] {
            assert!(
                codes.as_array().unwrap().iter().any(|c| c == code),
                "{code}"
            );
        }
    }
}
