//! Shared test support: a Microsoft emulator serving the real bodies collected in
//! `tests/fixtures/microsoft` (see SOURCES.md there), and secret-leak scanning.
#![allow(dead_code)]

use std::time::Duration;

pub mod cluster;
pub mod entra;
pub mod entra_tenant;
pub mod fake_api;
pub mod harness;
pub mod logs;
pub mod nocobase_emu;
pub mod operator_process;
pub mod real_kube;
pub mod real_nocobase;
pub mod release;

use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const TENANT: &str = "72f988bf-0000-4000-8000-000000000001";
pub const CLIENT: &str = "11111111-2222-4333-8444-555555555555";
/// A secret Value as the portal makes them (40 characters, `~` at position 4); its hint
/// `Q~x` matches one of the credentials in `graph_application.json`.
pub const SECRET: &str = "Q~xR8~kZ3vW9pLm_YhT2.nBq7XcJf5Gd0sAe4Ru~K";
/// What a Secret ID looks like (a GUID), pasted instead of the Value.
pub const SECRET_ID: &str = "6e5f5f73-74ec-4ee4-b3dc-3f092f15fc13";
/// The access token in `token_success.json`.
pub const TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.FAKE-EMULATOR-TOKEN.sig";

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/microsoft/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn json_response(status: u16, fixture_name: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/json; charset=utf-8")
        .set_body_bytes(fixture(fixture_name))
}

/// A local stand-in for login.microsoftonline.com and graph.microsoft.com.
pub struct Emulator {
    pub server: MockServer,
}

impl Emulator {
    pub async fn start() -> Self {
        Self {
            server: MockServer::start().await,
        }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Answers every token request with `response`.
    pub async fn token(&self, response: ResponseTemplate) {
        Mock::given(method("POST"))
            .and(path(format!("/{TENANT}/oauth2/v2.0/token")))
            .respond_with(response)
            .mount(&self.server)
            .await;
    }

    /// Answers token requests carrying this client secret (URL-safe characters only).
    pub async fn token_for_secret(&self, secret: &str, response: ResponseTemplate) {
        Mock::given(method("POST"))
            .and(path(format!("/{TENANT}/oauth2/v2.0/token")))
            .and(wiremock::matchers::body_string_contains(format!(
                "client_secret={secret}&"
            )))
            .respond_with(response)
            .with_priority(2)
            .mount(&self.server)
            .await;
    }

    /// Answers the next `n` token requests with `response` (then later mounts apply).
    pub async fn token_times(&self, response: ResponseTemplate, n: u64) {
        Mock::given(method("POST"))
            .and(path(format!("/{TENANT}/oauth2/v2.0/token")))
            .respond_with(response)
            .up_to_n_times(n)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    pub async fn graph(&self, response: ResponseTemplate) {
        Mock::given(method("GET"))
            .and(path_regex(r"^/v1\.0/applications\(appId='[0-9a-f-]+'\)$"))
            .respond_with(response)
            .mount(&self.server)
            .await;
    }

    pub async fn token_requests(&self) -> Vec<wiremock::Request> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path().ends_with("/oauth2/v2.0/token"))
            .collect()
    }

    pub async fn graph_requests(&self) -> Vec<wiremock::Request> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path().starts_with("/v1.0/"))
            .collect()
    }
}

/// Fast retry settings so tests of retries take milliseconds.
pub fn fast_options() -> nocobase_mail_operator::microsoft::ClientOptions {
    nocobase_mail_operator::microsoft::ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(800),
        deadline: Duration::from_secs(5),
        max_attempts: 3,
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(40),
        ..Default::default()
    }
}

/// Fails when `text` contains the secret, a prefix of it longer than the 3-character hint
/// Microsoft itself shows, any 6-character piece of it, or the access token.
pub fn assert_no_secret(text: &str, secrets: &[&str]) {
    for s in secrets.iter().filter(|s| s.chars().count() > 3) {
        assert!(!text.contains(s), "a secret leaked into output:\n{text}");
        let chars: Vec<char> = s.chars().collect();
        let prefix: String = chars.iter().take(4).collect();
        assert!(
            !text.contains(&prefix),
            "a prefix of a secret ({prefix:?}) leaked into output:\n{text}"
        );
        for w in chars.windows(6) {
            let piece: String = w.iter().collect();
            // windows made only of hex digits and dashes also occur in GUIDs and trace IDs
            if piece.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                continue;
            }
            assert!(
                !text.contains(&piece),
                "a piece of a secret ({piece:?}) leaked into output:\n{text}"
            );
        }
    }
    assert!(
        !text.contains(TOKEN),
        "the access token leaked into output:\n{text}"
    );
    assert!(
        !text.contains("FAKE-EMULATOR-TOKEN"),
        "the access token leaked into output:\n{text}"
    );
}

/// `host:port` of a URL, as an allow-list entry names one exact address.
pub fn host_port(url: &str) -> String {
    let u = url::Url::parse(url).expect("a URL");
    format!(
        "{}:{}",
        u.host_str().expect("a host"),
        u.port_or_known_default().expect("a port")
    )
}

/// The allow-lists a test gives the operator: exactly the emulators' addresses, as a local
/// run would with `--allowed-authority-hosts 127.0.0.1:PORT` and friends.
pub fn allow_exactly(
    microsoft: &str,
    nocobase: &[&str],
) -> nocobase_mail_operator::allow::AllowList {
    let ms = vec![host_port(microsoft)];
    // a bare host (no scheme) is an entry as written: any port of that host
    let nb: Vec<String> = nocobase
        .iter()
        .map(|u| {
            if u.contains("://") {
                host_port(u)
            } else {
                u.to_string()
            }
        })
        .collect();
    nocobase_mail_operator::allow::AllowList::new(&ms, &ms, &nb).expect("valid entries")
}

/// A controller context on a (fake) API server, with fast Microsoft retries.
pub fn test_context(
    client: kube::Client,
    allow: nocobase_mail_operator::allow::AllowList,
    clock: nocobase_mail_operator::controller::reconcile::Clock,
) -> std::sync::Arc<nocobase_mail_operator::controller::Context> {
    use nocobase_mail_operator::controller::{Context, validations::ValidationCache};
    use std::sync::Arc;
    let metrics = Arc::new(nocobase_mail_operator::telemetry::Metrics::default());
    Arc::new(Context {
        recorder: nocobase_mail_operator::controller::events::Recorders::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "nocobase-mail-operator".into(),
                instance: None,
            },
        ),
        client,
        validations: ValidationCache::new(
            nocobase_mail_operator::microsoft::MicrosoftClient::new(fast_options()).unwrap(),
            Duration::from_secs(300),
            Arc::clone(&metrics),
            clock.clone(),
        ),
        metrics,
        clock,
        http: nocobase_mail_operator::http::default_client(None).unwrap(),
        error_backoff: Default::default(),
        allow,
        own_writes: Default::default(),
        limits: Default::default(),
        indexes: Default::default(),
        fingerprint_key: nocobase_mail_operator::fingerprint::OperatorKey::random(),
    })
}

/// Status, reason and message of condition `t` of an integration (as JSON).
pub fn condition_of(mmi: &serde_json::Value, t: &str) -> (String, String, String) {
    let c = mmi["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == t)
        .unwrap_or_else(|| panic!("no condition {t} in {}", mmi["status"]));
    let s = |k: &str| c[k].as_str().unwrap().to_owned();
    (s("status"), s("reason"), s("message"))
}
