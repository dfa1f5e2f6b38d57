//! Unit tests of `error.rs`, kept beside it so that the module reads as one piece.
use super::*;

/// The contract's table (docs/api.md), written out again on purpose: a change to the code's
/// table must be a change to the contract too.
const CONTRACT: [(&str, u16); 18] = [
    ("invalid_request", 400),
    ("unsupported_media_type", 415),
    ("payload_too_large", 413),
    ("validation_failed", 422),
    ("email_taken", 409),
    ("invalid_credentials", 401),
    ("invalid_token", 401),
    ("wrong_password", 403),
    ("forbidden_origin", 403),
    ("email_unverified", 403),
    ("invalid_link", 400),
    ("not_found", 404),
    ("method_not_allowed", 405),
    ("too_many_requests", 429),
    ("overloaded", 503),
    ("unavailable", 503),
    ("timeout", 503),
    ("internal", 500),
];

fn one_error_of_each_code() -> Vec<Error> {
    vec![
        Error::InvalidRequest("The request body is not valid JSON."),
        Error::UnsupportedMediaType,
        Error::PayloadTooLarge,
        Error::Validation(FieldErrors::from([("email", vec!["bad".to_owned()])])),
        Error::EmailTaken,
        Error::InvalidCredentials,
        Error::token("expired"),
        Error::WrongPassword,
        Error::ForbiddenOrigin,
        Error::EmailUnverified,
        Error::InvalidLink,
        Error::NotFound,
        Error::MethodNotAllowed,
        Error::TooManyRequests {
            retry_after_secs: 7,
        },
        Error::Overloaded {
            retry_after_secs: 0,
        },
        Error::Unavailable("connection refused by 10.0.0.5".into()),
        Error::Timeout,
        Error::internal("database", "duplicate key value violates users_pkey"),
    ]
}

async fn body_of(response: Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn every_code_answers_as_the_contract_says() {
    let errors = one_error_of_each_code();
    assert_eq!(errors.len(), ErrorCode::ALL.len());
    for ((error, (code, status)), listed) in errors.into_iter().zip(CONTRACT).zip(ErrorCode::ALL) {
        assert_eq!(error.code(), listed, "{code}");
        let cause = cause_chain(&error);
        let response = error.into_response();
        assert_eq!(response.status().as_u16(), status, "{code}");
        let headers = response.headers().clone();
        assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON, "{code}");
        let retry_after = headers.get(header::RETRY_AFTER);
        match code {
            "too_many_requests" => assert_eq!(retry_after.unwrap(), "7"),
            "overloaded" | "timeout" => assert_eq!(retry_after.unwrap(), "1"),
            _ => assert!(retry_after.is_none(), "{code}"),
        }
        assert_eq!(
            headers.contains_key(header::WWW_AUTHENTICATE),
            status == 401,
            "{code}"
        );
        let logged = response.extensions().get::<ErrorCause>().cloned();
        assert_eq!(logged.is_some(), status >= 500, "{code}");
        let body = body_of(response).await;
        assert_eq!(body["code"], code);
        assert_eq!(body["status"], status);
        assert_eq!(body["type"], "about:blank");
        assert!(!body["title"].as_str().unwrap().is_empty());
        // Causes go to the log, never to the client.
        let text = body.to_string();
        assert!(
            !text.contains("10.0.0.5") && !text.contains("users_pkey"),
            "{text}"
        );
        if status >= 500 {
            assert!(!cause.is_empty());
        }
        assert_eq!(body.get("errors").is_some(), status == 422, "{code}");
    }
}

#[test]
fn the_codes_serialise_as_the_contract_spells_them() {
    for (code, (spelled, _)) in ErrorCode::ALL.into_iter().zip(CONTRACT) {
        assert_eq!(serde_json::to_value(code).unwrap(), spelled);
    }
}
