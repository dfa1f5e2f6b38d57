//! The OpenAPI 3.1 document, generated from the handlers' annotations. A copy is checked in at
//! `openapi.json`; a test fails when the two differ (`make openapi` rewrites the copy).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorCode, Problem};
use crate::http::{self, EventList, EventView, SessionList, SessionView, TokenResponse, UserView};

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
        http::auth::register, http::auth::login, http::auth::refresh, http::auth::logout,
        http::account::me, http::account::change_password, http::account::delete_account,
        http::account::events, http::sessions::sessions, http::sessions::revoke_session,
        http::sessions::revoke_other_sessions, http::ops::jwks, http::ops::openapi,
        http::ops::healthz, http::ops::readyz, http::ops::metrics,
        http::email::verify_email, http::email::resend_verification,
        http::email::request_password_reset, http::email::confirm_password_reset,
    ),
    components(
        schemas(TokenResponse, UserView, SessionView, EventView, Problem, ErrorCode,
            http::auth::Credentials, http::auth::RefreshBody, http::auth::LogoutBody,
            http::account::ChangePassword, http::account::DeleteAccount, SessionList, EventList,
            http::email::LinkToken, http::email::EmailOnly, http::email::ResetConfirmation,
            http::email::Accepted),
        responses(Problem),
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Registration, sign-in, token refresh and sign-out"),
        (name = "account", description = "The signed-in account"),
        (name = "sessions", description = "The account's sessions"),
        (name = "email", description = "Email verification and password reset"),
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
            "/api/v1/auth/verify-email",
            "/api/v1/auth/verify-email/resend",
            "/api/v1/auth/password-reset",
            "/api/v1/auth/password-reset/confirm",
        ] {
            assert!(paths.contains_key(path), "{path} is not documented");
        }
        let codes = value["components"]["schemas"]["ProblemCode"]["enum"]
            .as_array()
            .unwrap()
            .clone();
        for code in ErrorCode::ALL {
            let spelled = serde_json::to_value(code).unwrap();
            assert!(codes.contains(&spelled), "{spelled} is not documented");
        }
        assert_eq!(codes.len(), ErrorCode::ALL.len());
    }
}
