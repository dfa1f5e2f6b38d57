//! The refresh cookie (read and written with the `cookie` crate), the origin check for requests
//! it authenticates, and the token response that sets it.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Response};
use cookie::{Cookie, SameSite};

use super::REFRESH_COOKIE;
use super::responses::TokenResponse;
use crate::error::Error;
use crate::service::{Auth, SignedIn};

const COOKIE_PATH: &str = "/api/v1/auth";
/// Refresh cookies looked at in one request; more is not a browser's doing.
const MAX_REFRESH_COOKIES: usize = 4;

/// Every distinct refresh token the request's cookies carry (a few at most: a cookie of the same
/// name may be planted for a wider path or a parent domain).
pub(super) fn refresh_cookie_values(headers: &HeaderMap) -> Vec<String> {
    let mut values: Vec<String> = Vec::new();
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|cookie| cookie.name() == REFRESH_COOKIE);
    for cookie in cookies.take(MAX_REFRESH_COOKIES) {
        if !values.iter().any(|value| value == cookie.value()) {
            values.push(cookie.value().to_owned());
        }
    }
    values
}

/// The refresh token the request's cookie carries, if any. Two different ones mean that one was
/// planted, and the browser does not say which is ours: the ambiguity is refused rather than risk
/// signing the user in to someone else's session.
pub(super) fn refresh_cookie_value(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let mut values = refresh_cookie_values(headers);
    if values.len() > 1 {
        return Err(Error::token("several different refresh cookies"));
    }
    Ok(values.pop())
}

/// `Set-Cookie` for the refresh token; an empty token with `max_age` 0 clears it.
pub(super) fn refresh_cookie(auth: &Auth, token: &str, max_age: u64) -> HeaderValue {
    let cookie = Cookie::build((REFRESH_COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path(COOKIE_PATH)
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age).unwrap_or(i64::MAX),
        ))
        .secure(auth.config.cookie_secure)
        .build();
    // Tokens are base64url, so the value is always a valid header.
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A request that authenticates with the cookie must come from our own origin (that of
/// `AUTH_ISSUER`) or an allowed one; browsers always send `Origin` on cross-origin POSTs.
pub(super) fn check_origin(auth: &Auth, headers: &HeaderMap) -> Result<(), Error> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .ok()
        .and_then(crate::config::normalise_origin)
        .ok_or(Error::ForbiddenOrigin)?;
    let allowed = auth.config.own_origin().as_deref() == Some(origin.as_str())
        || auth.config.allowed_origins.contains(&origin);
    if allowed {
        Ok(())
    } else {
        Err(Error::ForbiddenOrigin)
    }
}

/// The token response of register, login and refresh, with the refresh cookie. A request with
/// `Origin` comes from a browser, which holds the refresh token in the cookie only: script on
/// the page never sees it, so injected script cannot carry a session away.
pub(super) fn token_response(
    auth: &Auth,
    request: &HeaderMap,
    status: StatusCode,
    signed_in: SignedIn,
) -> Response {
    let cookie = refresh_cookie(auth, &signed_in.refresh_token, signed_in.refresh_expires_in);
    let body = TokenResponse::new(signed_in, !request.contains_key(header::ORIGIN));
    (
        status,
        AppendHeaders([
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
            (header::SET_COOKIE, cookie),
        ]),
        Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.append(header::COOKIE, HeaderValue::from_str(value).unwrap());
        map
    }

    #[test]
    fn the_refresh_cookie_is_found_among_others() {
        let value = |header: &str| refresh_cookie_value(&cookies(header)).unwrap();
        assert_eq!(value("a=1; refresh_token=xyz; b=2").as_deref(), Some("xyz"));
        assert_eq!(value("refresh=xyz"), None);
        assert_eq!(refresh_cookie_value(&HeaderMap::new()).unwrap(), None);
        // The same cookie twice (sent for two matching paths) is not ambiguous.
        assert_eq!(
            value("refresh_token=xyz; refresh_token=xyz").as_deref(),
            Some("xyz")
        );
    }

    #[test]
    fn two_different_refresh_cookies_are_refused() {
        assert!(
            refresh_cookie_value(&cookies("refresh_token=ours; refresh_token=planted")).is_err()
        );
    }
}
