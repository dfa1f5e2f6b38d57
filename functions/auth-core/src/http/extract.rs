//! What handlers take from a request: JSON bodies with the contract's errors, the caller behind
//! a bearer token, and where the request came from.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::AppState;
use crate::error::Error;
use crate::service::ClientInfo;
use crate::token::TokenSubject;

/// A client's request id is plain when it is short and has no character a log line or header
/// could be bent with.
pub fn is_plain_request_id(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A JSON body: 415 unless `Content-Type: application/json`, 413 over the limit, 400 when it does
/// not parse into `T` (missing field, wrong type, malformed JSON).
pub struct JsonBody<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, Error> {
    match Bytes::from_request(request, state).await {
        Ok(bytes) => Ok(bytes),
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            Err(Error::PayloadTooLarge)
        }
        Err(_) => Err(Error::InvalidRequest("The request body could not be read.")),
    }
}

/// Parses a request body that must be a JSON object. serde would also read a struct from an
/// array (`["a@b.c", "pw"]`), which no client of this API sends on purpose.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let starts_as_object = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|first| *first == b'{');
    let parsed = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            Error::InvalidRequest("A required field is missing or a field has the wrong JSON type.")
        }
        _ => Error::InvalidRequest("The request body is not valid JSON."),
    })?;
    if starts_as_object {
        Ok(parsed)
    } else {
        Err(Error::InvalidRequest(
            "The request body must be a JSON object.",
        ))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = read_body(request, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Like [`JsonBody`], but an empty body is `None` (refresh and logout may rely on the cookie).
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(request.headers());
        let bytes = read_body(request, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJsonBody(None));
        }
        if !json {
            return Err(Error::UnsupportedMediaType);
        }
        // JSON `null` says "nothing here" as plainly as an empty body does.
        if serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|value| value.is_null()) {
            return Ok(OptionalJsonBody(None));
        }
        parse_json(&bytes).map(|value| OptionalJsonBody(Some(value)))
    }
}

/// The bearer token of a request, if it sent one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The bearer token of a request that needs one; 401 without it.
pub fn required_bearer_token(headers: &HeaderMap) -> Result<&str, Error> {
    bearer_token(headers).ok_or(Error::InvalidToken {
        presented: false,
        reason: "no bearer token",
    })
}

/// The caller of an endpoint that needs a live session's access token.
pub struct AuthUser(pub TokenSubject);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        auth: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = required_bearer_token(&parts.headers)?;
        auth.authenticate(token, OffsetDateTime::now_utc())
            .await
            .map(AuthUser)
    }
}

/// The client's address. Behind trusted proxies it is the right-most `X-Forwarded-For` entry that
/// is not itself a trusted proxy; anyone else's header is ignored.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    // An IPv4-mapped address is the IPv4 address, for the trusted list and for the counts.
    let peer = peer?.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    Some(
        forwarded
            .iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer),
    )
}

/// Where the request came from: the client's address and user agent.
pub struct Client(pub ClientInfo);

impl FromRequestParts<AppState> for Client {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        auth: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let ip = client_ip(peer, &parts.headers, &auth.config.trusted_proxies);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok());
        Ok(Client(ClientInfo::new(ip, user_agent)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    pub(crate) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.3")]);
        let untrusted_peer = "192.0.2.1".parse().ok();
        assert_eq!(client_ip(untrusted_peer, &xff, &trusted), untrusted_peer);
        let proxy = "10.0.0.2".parse().ok();
        assert_eq!(
            client_ip(proxy, &xff, &trusted),
            "198.51.100.7".parse().ok()
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        assert_eq!(
            client_ip(proxy, &headers(&[("x-forwarded-for", "garbage")]), &trusted),
            proxy
        );
    }

    #[test]
    fn bearer_tokens_are_found() {
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer ")])),
            None
        );
    }

    #[test]
    fn request_ids_are_echoed_only_when_plain() {
        assert!(is_plain_request_id(b"abc-123_4.5:6"));
        assert!(!is_plain_request_id(b""));
        assert!(!is_plain_request_id(b"a b"));
        assert!(!is_plain_request_id(&[b'a'; 129]));
    }
}
