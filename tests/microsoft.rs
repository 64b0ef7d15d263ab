//! The Microsoft library against a local emulator answering with Microsoft's real bodies:
//! every outcome and reason the operator distinguishes.

mod common;

use std::time::Duration;

use common::*;
use nocobase_mail_operator::api::{Cloud, ExpirySource};
use nocobase_mail_operator::input::{RawCredentials, check};
use nocobase_mail_operator::microsoft::{MicrosoftClient, Outcome, Verdict, reason};
use wiremock::ResponseTemplate;

async fn validate_with(emu: &Emulator, secret: &str, discover: bool) -> Verdict {
    let uri = emu.uri();
    let creds = check(&RawCredentials {
        tenant_id: TENANT,
        client_id: CLIENT,
        client_secret: secret.as_bytes(),
        cloud: Cloud::AzurePublic,
        authority_host: Some(&uri),
        graph_host: Some(&uri),
    })
    .expect("valid input");
    MicrosoftClient::new(fast_options())
        .unwrap()
        .validate(&creds, discover)
        .await
}

async fn token_answer(status: u16, fixture_name: &str, secret: &str) -> (Verdict, Emulator) {
    let emu = Emulator::start().await;
    emu.token(json_response(status, fixture_name)).await;
    let v = validate_with(&emu, secret, true).await;
    (v, emu)
}

#[tokio::test]
async fn valid_credentials_with_expiry_and_permissions_from_graph() {
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    emu.graph(json_response(200, "graph_application.json"))
        .await;
    let v = validate_with(&emu, SECRET, true).await;
    assert_eq!(v.outcome, Outcome::Valid);
    assert_eq!(v.reason, None);
    assert_eq!(
        v.graph.expiry.expires_at.unwrap().to_string(),
        "2027-12-26T00:00:00Z"
    );
    assert_eq!(v.graph.expiry.source, Some(ExpirySource::Graph));
    assert_eq!(
        v.graph.missing_permissions.as_deref(),
        Some(&["IMAP.AccessAsUser.All".to_owned(), "SMTP.Send".to_owned()][..])
    );

    // The request is the client-credentials grant, with the Graph scope of the cloud.
    let reqs = emu.token_requests().await;
    assert_eq!(reqs.len(), 1);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&reqs[0].body)
        .into_owned()
        .collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("grant_type").as_deref(), Some("client_credentials"));
    assert_eq!(get("client_id").as_deref(), Some(CLIENT));
    assert_eq!(get("client_secret").as_deref(), Some(SECRET));
    assert_eq!(get("scope"), Some(format!("{}/.default", emu.uri())));
    // Graph is read with the token just obtained.
    let graph = emu.graph_requests().await;
    assert_eq!(graph.len(), 1);
    assert_eq!(
        graph[0].headers.get("authorization").unwrap(),
        &format!("Bearer {TOKEN}")
    );
}

#[tokio::test]
async fn trailing_newline_is_never_sent() {
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    let v = validate_with(&emu, &format!("{SECRET}\n"), false).await;
    assert_eq!(v.outcome, Outcome::Valid);
    assert!(
        v.notes.iter().any(|n| n.contains("line break")),
        "{:?}",
        v.notes
    );
    let body = String::from_utf8(emu.token_requests().await[0].body.clone()).unwrap();
    assert!(!body.contains("%0A") && !body.contains('\n'), "{body}");
}

#[tokio::test]
async fn graph_forbidden_leaves_expiry_unknown_and_says_how_to_fix() {
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    emu.graph(json_response(
        403,
        "graph_403_authorization_request_denied.json",
    ))
    .await;
    let v = validate_with(&emu, SECRET, true).await;
    assert_eq!(
        v.outcome,
        Outcome::Valid,
        "a Graph refusal does not change the verdict"
    );
    assert_eq!(v.graph.expiry.expires_at, None);
    let note = v.graph.expiry.note.unwrap();
    assert!(
        note.contains("Application.Read.All") && note.contains("expiresAt"),
        "{note}"
    );
    assert_eq!(v.graph.missing_permissions, None);
}

#[tokio::test]
async fn graph_not_found_and_unknown_hint_leave_expiry_unknown() {
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    emu.graph(json_response(
        404,
        "graph_404_request_resource_not_found.json",
    ))
    .await;
    let v = validate_with(&emu, SECRET, true).await;
    assert_eq!(
        (v.outcome, v.graph.expiry.expires_at),
        (Outcome::Valid, None)
    );

    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    emu.graph(json_response(200, "graph_application.json"))
        .await;
    let v = validate_with(&emu, "Zz9~otherSecretValueNotRegistered.12345678", true).await;
    assert_eq!(v.graph.expiry.expires_at, None, "never guessed");
    assert!(v.graph.expiry.note.unwrap().contains("hint"));
}

#[tokio::test]
async fn discovery_off_makes_no_graph_call() {
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    emu.graph(json_response(200, "graph_application.json"))
        .await;
    let v = validate_with(&emu, SECRET, false).await;
    assert_eq!(v.outcome, Outcome::Valid);
    assert!(emu.graph_requests().await.is_empty());
}

#[tokio::test]
async fn every_rejection_reason() {
    let cases: &[(u16, &str, &str, &str, i64)] = &[
        (
            401,
            "aadsts7000215.json",
            SECRET,
            reason::INVALID_SECRET,
            7000215,
        ),
        (
            401,
            "aadsts7000215.json",
            SECRET_ID,
            reason::SECRET_ID_INSTEAD_OF_VALUE,
            7000215,
        ),
        (
            401,
            "aadsts7000222.json",
            SECRET,
            reason::SECRET_EXPIRED,
            7000222,
        ),
        (
            401,
            "aadsts7000216.json",
            SECRET,
            reason::SECRET_MISSING,
            7000216,
        ),
        (
            400,
            "aadsts700016.json",
            SECRET,
            reason::APPLICATION_NOT_FOUND,
            700016,
        ),
        (
            400,
            "aadsts7000112.json",
            SECRET,
            reason::APPLICATION_DISABLED,
            7000112,
        ),
        (
            400,
            "aadsts90002.json",
            SECRET,
            reason::TENANT_NOT_FOUND,
            90002,
        ),
        (
            400,
            "aadsts90002_discovery.json",
            SECRET,
            reason::TENANT_NOT_FOUND,
            90002,
        ),
        (
            400,
            "aadsts900023.json",
            SECRET,
            reason::INVALID_TENANT,
            900023,
        ),
        (
            400,
            "aadsts53003.json",
            SECRET,
            reason::BLOCKED_BY_CONDITIONAL_ACCESS,
            53003,
        ),
        (
            400,
            "aadsts500011.json",
            SECRET,
            reason::GRAPH_NOT_AVAILABLE_IN_TENANT,
            500011,
        ),
        (
            400,
            "aadsts1002012.json",
            SECRET,
            reason::INVALID_SCOPE,
            1002012,
        ),
    ];
    for (status, file, secret, want, code) in cases {
        let (v, emu) = token_answer(*status, file, secret).await;
        assert_eq!(v.outcome, Outcome::Rejected, "{file}");
        assert_eq!(v.reason, Some(*want), "{file}");
        assert_eq!(v.aadsts_code, Some(*code), "{file}");
        assert!(v.hint.is_some() && !v.message.is_empty(), "{file}");
        assert!(
            v.trace_id.is_some(),
            "{file}: Microsoft's trace ID is kept for support requests"
        );
        assert_eq!(
            emu.token_requests().await.len(),
            1,
            "{file}: a rejection is not retried"
        );
        assert!(emu.graph_requests().await.is_empty());
    }
}

#[tokio::test]
async fn secret_id_message_tells_to_copy_the_value() {
    let (v, _emu) = token_answer(401, "aadsts7000215.json", SECRET_ID).await;
    assert!(v.message.contains("Secret ID") && v.hint.unwrap().contains("Value"));
}

#[tokio::test]
async fn throttling_honours_retry_after() {
    // Microsoft's throttling answer: 429, plain text, Retry-After in seconds.
    let throttled = |secs: &str| {
        ResponseTemplate::new(429)
            .insert_header("retry-after", secs)
            .insert_header("content-type", "text/plain")
            .set_body_bytes(fixture("throttled_429.txt"))
    };
    // A long Retry-After is beyond the deadline: report it instead of waiting.
    let emu = Emulator::start().await;
    emu.token(throttled("60")).await;
    let v = validate_with(&emu, SECRET, true).await;
    assert_eq!(
        (v.outcome, v.reason),
        (Outcome::Unavailable, Some(reason::THROTTLED))
    );
    assert_eq!(v.retry_after, Some(Duration::from_secs(60)));
    assert_eq!(emu.token_requests().await.len(), 1);

    // A short one is waited for, then the retry succeeds.
    let emu = Emulator::start().await;
    emu.token_times(throttled("1"), 1).await;
    emu.token(json_response(200, "token_success.json")).await;
    let t0 = std::time::Instant::now();
    let v = validate_with(&emu, SECRET, false).await;
    assert_eq!(v.outcome, Outcome::Valid);
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    assert_eq!(emu.token_requests().await.len(), 2);
}

#[tokio::test]
async fn outages_are_unavailable_and_retried_a_bounded_number_of_times() {
    for (status, file, want_code) in [
        (503, "outage_503.html", None),
        (503, "outage_503_afd.html", None),
        (503, "service_unavailable_5xx.json", Some(90033)),
        (500, "aadsts7000215.json", Some(7000215)),
    ] {
        let emu = Emulator::start().await;
        emu.token(ResponseTemplate::new(status).set_body_bytes(fixture(file)))
            .await;
        let v = validate_with(&emu, SECRET, true).await;
        assert_eq!(
            (v.outcome, v.reason),
            (Outcome::Unavailable, Some(reason::SERVICE_UNAVAILABLE)),
            "{file}"
        );
        if let Some(code) = want_code {
            assert_eq!(v.aadsts_code, Some(code), "{file}");
        }
        assert_eq!(
            emu.token_requests().await.len(),
            3,
            "{file}: retried up to max_attempts"
        );
    }
}

#[tokio::test]
async fn recovers_when_an_outage_ends_within_the_retries() {
    let emu = Emulator::start().await;
    emu.token_times(
        ResponseTemplate::new(503).set_body_bytes(fixture("outage_503.html")),
        2,
    )
    .await;
    emu.token(json_response(200, "token_success.json")).await;
    let v = validate_with(&emu, SECRET, false).await;
    assert_eq!(v.outcome, Outcome::Valid);
    assert_eq!(emu.token_requests().await.len(), 3);
}

#[tokio::test]
async fn hanging_microsoft_is_a_timeout() {
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json").set_delay(Duration::from_secs(3)))
        .await;
    let t0 = std::time::Instant::now();
    let v = validate_with(&emu, SECRET, false).await;
    assert_eq!(
        (v.outcome, v.reason),
        (Outcome::Unavailable, Some(reason::TIMEOUT))
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "bounded by the deadline"
    );
}

#[tokio::test]
async fn unreachable_microsoft_is_a_network_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let host = format!("http://127.0.0.1:{port}");
    let creds = check(&RawCredentials {
        tenant_id: TENANT,
        client_id: CLIENT,
        client_secret: SECRET.as_bytes(),
        cloud: Cloud::AzurePublic,
        authority_host: Some(&host),
        graph_host: Some(&host),
    })
    .unwrap();
    let v = MicrosoftClient::new(fast_options())
        .unwrap()
        .validate(&creds, true)
        .await;
    assert_eq!(
        (v.outcome, v.reason),
        (Outcome::Unavailable, Some(reason::NETWORK_ERROR))
    );
}

#[tokio::test]
async fn malformed_answers_are_unexpected_not_rejections() {
    let full = fixture("aadsts7000215.json");
    let truncated = full[..full.len() / 2].to_vec();
    for (status, body) in [
        (200, br#"{"token_type":"Bearer","expires_in":3599"#.to_vec()),
        (200, b"{}".to_vec()),
        (400, truncated),
        (404, b"Not Found".to_vec()),
        (302, Vec::new()),
    ] {
        let emu = Emulator::start().await;
        emu.token(ResponseTemplate::new(status).set_body_bytes(body.clone()))
            .await;
        let v = validate_with(&emu, SECRET, true).await;
        assert_eq!(
            (v.outcome, v.reason),
            (Outcome::Unavailable, Some(reason::UNEXPECTED_RESPONSE)),
            "HTTP {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
}

/// Codes without a collected body: Microsoft's envelope from a real fixture, with the code
/// and sentence of the error-codes reference page swapped in.
fn shaped_like_microsoft(code: i64, error: &str, sentence: &str) -> Vec<u8> {
    let mut body: serde_json::Value =
        serde_json::from_slice(&fixture("aadsts700016.json")).unwrap();
    // keep Microsoft's own "Trace ID: ... Correlation ID: ... Timestamp: ..." tail
    let description = body["error_description"].as_str().unwrap().to_owned();
    let tail = &description[description.find("Trace ID:").unwrap()..];
    body["error"] = serde_json::json!(error);
    body["error_codes"] = serde_json::json!([code]);
    body["error_description"] = serde_json::json!(format!("AADSTS{code}: {sentence} {tail}"));
    body["error_uri"] = serde_json::json!(format!(
        "https://login.microsoftonline.com/error?code={code}"
    ));
    serde_json::to_vec(&body).unwrap()
}

#[tokio::test]
async fn unknown_authority_and_codes_not_in_the_table() {
    for (code, error, sentence, want) in [
        (
            50049,
            "invalid_request",
            "Unknown or invalid instance.",
            reason::UNKNOWN_AUTHORITY,
        ),
        (
            9999999,
            "invalid_client",
            "A refusal this operator has never seen.",
            reason::REJECTED_BY_MICROSOFT,
        ),
    ] {
        let emu = Emulator::start().await;
        emu.token(
            ResponseTemplate::new(400).set_body_bytes(shaped_like_microsoft(code, error, sentence)),
        )
        .await;
        let v = validate_with(&emu, SECRET, true).await;
        assert_eq!(
            (v.outcome, v.reason, v.aadsts_code),
            (Outcome::Rejected, Some(want), Some(code))
        );
        if want == reason::REJECTED_BY_MICROSOFT {
            assert!(
                v.message.contains(sentence),
                "Microsoft's own sentence is quoted: {}",
                v.message
            );
            assert!(!v.message.contains("Trace ID"), "without the trace tail");
        }
    }
}
