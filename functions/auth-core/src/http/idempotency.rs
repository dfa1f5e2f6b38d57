//! The `Idempotency-Key` header, and the caller of a signed-in change that honours it.

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::Response;
use time::OffsetDateTime;

use super::AppState;
use super::extract::required_bearer_token;
use super::responses::no_content;
use crate::error::Error;
use crate::service::{KeyedRequest, SignedInCaller};
use crate::token::TokenSubject;

/// The OpenAPI description of the header on a signed-in change.
pub(crate) const SIGNED_IN_KEY: &str = "Makes a retry safe: the same key from the same session with the same request within a day gets the first answer (204) without doing the work again, even when the session or the account has ended since; the same key with another request gets 422. Send the same access token with the retry: the request is recognised by it.";

/// `Idempotency-Key`: 1 to 255 visible ASCII characters (a UUID, typically), or absent.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|key| (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(Error::InvalidRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters.",
        ))?;
    Ok(Some(key))
}

/// The caller of a signed-in request that changes something (a password change, an account
/// deletion, ending sessions), with its `Idempotency-Key` when it sent one. Taken before the
/// body, like [`super::extract::AuthUser`], so a request without a usable token is 401 first.
pub(crate) struct SignedInChange(SignedInCaller);

impl FromRequestParts<AppState> for SignedInChange {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        auth: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let bearer = required_bearer_token(&parts.headers)?;
        let key = idempotency_key(&parts.headers)?;
        // Keys are kept per endpoint (the route, not the path: a session's id is part of the
        // request, so reusing a key for another session is another request).
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map_or(parts.uri.path(), MatchedPath::as_str);
        let endpoint = format!("{} {route}", parts.method);
        auth.signed_in_caller(bearer, key, &endpoint, OffsetDateTime::now_utc())
            .await
            .map(SignedInChange)
    }
}

impl SignedInChange {
    /// Runs `work` at most once per key and answers 204: `request` holds the values from the
    /// path and the body that make the request what it is.
    pub(crate) async fn once<Fut>(
        self,
        auth: &AppState,
        request: &[&[u8]],
        work: impl FnOnce(TokenSubject, Option<KeyedRequest>) -> Fut,
    ) -> Result<Response, Error>
    where
        Fut: Future<Output = Result<(), Error>>,
    {
        auth.once(self.0, request, OffsetDateTime::now_utc(), work)
            .await?;
        Ok(no_content())
    }
}
