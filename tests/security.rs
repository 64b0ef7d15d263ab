//! What an integration author cannot make the operator do (issue 11), end to end through
//! the reconciler, the in-process fake API server and local servers: send a Secret to a
//! host outside the operator's allow-lists (not even a connection is made), learn about a
//! Secret it may not use, take over a Secret the operator did not create, or exhaust the
//! operator's memory with a huge answer.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::fake_api::FakeApi;
use common::harness::{self, MMI_AV};
use common::*;
use nocobase_mail_operator::allow::AllowList;
use nocobase_mail_operator::api::MicrosoftMailIntegration;
use nocobase_mail_operator::controller::{Context, reconcile};
use serde_json::{Value, json};

const NS: &str = "nocobase";
const GOOD: &str = "Gq7Zx2Lp9Vt4Rk8Wm1Nc6Hb3Jd5Fy0Ts2Qe7UaK";

/// A TCP server that only counts the connections it accepts: the proof that nothing,
/// not even a TCP handshake, reached a host outside the list.
struct Recorder {
    url: String,
    connections: Arc<AtomicUsize>,
}

impl Recorder {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Self { url, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

struct Harness {
    api: FakeApi,
    emu: Emulator,
    ctx: Arc<Context>,
}

async fn harness(allow: impl FnOnce(&Emulator) -> AllowList) -> Harness {
    let api = harness::fake_cluster();
    let emu = harness::microsoft(&[GOOD], &[]).await;
    let (_, clock) = harness::fixed_clock("2027-01-01T00:00:00Z".parse().unwrap());
    let ctx = test_context(api.client(), allow(&emu), clock);
    Harness { api, emu, ctx }
}

impl Harness {
    fn secret(&self, name: &str, data: Value) {
        self.api.insert(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS}, "stringData": data}));
    }

    fn integration(&self, name: &str, spec: Value) {
        let mut s = json!({"tenantId": TENANT, "clientId": CLIENT,
            "clientSecretRef": {"name": "entra", "key": "client-secret"},
            "authorityHost": self.emu.uri(), "graphHost": self.emu.uri()});
        s.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        self.api.insert(
            json!({"apiVersion": MMI_AV, "kind": "MicrosoftMailIntegration",
            "metadata": {"name": name, "namespace": NS}, "spec": s}),
        );
    }

    fn mmi(&self, name: &str) -> Option<Value> {
        self.api.get(MMI_AV, "MicrosoftMailIntegration", NS, name)
    }

    async fn settle(&self, name: &str) {
        for _ in 0..5 {
            let before = self.api.writes();
            let Some(m) = self.mmi(name) else { return };
            let obj: MicrosoftMailIntegration = serde_json::from_value(m).unwrap();
            reconcile(Arc::new(obj), Arc::clone(&self.ctx))
                .await
                .expect("reconcile");
            if self.api.writes() == before {
                return;
            }
        }
        panic!("no steady state after 5 rounds");
    }

    fn condition(&self, name: &str, t: &str) -> (String, String, String) {
        condition_of(&self.mmi(name).unwrap(), t)
    }

    /// Whether the operator read this Secret from the API server.
    fn read_secret(&self, name: &str) -> bool {
        self.api
            .requests()
            .iter()
            .any(|r| r.resource == "secrets" && r.verb == "get" && r.name.as_deref() == Some(name))
    }
}

fn only_emulator(emu: &Emulator) -> AllowList {
    allow_exactly(&emu.uri(), &[])
}

#[tokio::test]
async fn an_authority_host_outside_the_list_receives_nothing() {
    let h = harness(only_emulator).await;
    let rec = Recorder::start().await;
    h.secret("entra", json!({"client-secret": GOOD}));
    h.integration("steal", json!({"authorityHost": rec.url}));
    h.settle("steal").await;

    let (status, reason, message) = h.condition("steal", "CredentialsValid");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "HostNotAllowed")
    );
    assert!(message.contains("--allowed-authority-hosts"), "{message}");
    assert!(message.contains(&host_port(&rec.url)), "{message}");
    assert_eq!(h.condition("steal", "Ready").1, "HostNotAllowed");
    assert_eq!(rec.connections(), 0, "not even a connection");
    assert!(h.emu.token_requests().await.is_empty());
    // refused before the Secret was read
    assert!(!h.read_secret("entra"));
    let status = h.mmi("steal").unwrap()["status"].to_string();
    assert_no_secret(&status, &[GOOD]);
}

#[tokio::test]
async fn a_graph_host_outside_the_list_receives_nothing() {
    let h = harness(only_emulator).await;
    let rec = Recorder::start().await;
    h.secret("entra", json!({"client-secret": GOOD}));
    h.integration("graph", json!({"graphHost": rec.url}));
    h.settle("graph").await;
    let (_, reason, message) = h.condition("graph", "CredentialsValid");
    assert_eq!(reason, "HostNotAllowed");
    assert!(message.contains("--allowed-graph-hosts"), "{message}");
    assert_eq!(rec.connections(), 0);
    // the token request carries the Graph host as its scope: not sent either
    assert!(h.emu.token_requests().await.is_empty());
}

#[tokio::test]
async fn the_defaults_refuse_loopback_so_the_emulator_gets_nothing() {
    let h = harness(|_| AllowList::default()).await;
    h.secret("entra", json!({"client-secret": GOOD}));
    h.integration("local", json!({}));
    h.settle("local").await;
    assert_eq!(h.condition("local", "CredentialsValid").1, "HostNotAllowed");
    assert!(h.emu.server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_refused_integration_learns_nothing_about_the_secret() {
    let h = harness(only_emulator).await;
    let rec = Recorder::start().await;
    // a Secret the author cannot read, with keys that tell a story
    h.secret(
        "db",
        json!({"db-password": "hunter2-but-longer", "root-token": "x"}),
    );
    h.integration(
        "probe",
        json!({"authorityHost": rec.url, "clientSecretRef": {"name": "db", "key": "nope"}}),
    );
    h.settle("probe").await;
    let status = h.mmi("probe").unwrap()["status"].to_string();
    assert!(status.contains("HostNotAllowed"), "{status}");
    for leak in ["db-password", "root-token", "SecretKeyNotFound"] {
        assert!(!status.contains(leak), "{leak} in {status}");
    }
    assert!(!h.read_secret("db"));

    // allowed, the same Secret's key names are shown: the author could use it anyway
    h.integration(
        "allowed",
        json!({"clientSecretRef": {"name": "db", "key": "nope"}}),
    );
    h.settle("allowed").await;
    let (_, reason, message) = h.condition("allowed", "CredentialsValid");
    assert_eq!(reason, "SecretKeyNotFound");
    assert!(message.contains("db-password"), "{message}");
}

#[tokio::test]
async fn a_nocobase_url_outside_the_list_receives_nothing() {
    let h = harness(only_emulator).await;
    let rec = Recorder::start().await;
    h.secret("entra", json!({"client-secret": GOOD}));
    h.secret(
        "nocobase-api-key",
        json!({"api-key": "k3y-value-never-sent"}),
    );
    h.integration(
        "nb",
        json!({"nocobase": {"url": rec.url, "apiKeySecretRef": {"name": "nocobase-api-key"}}}),
    );
    h.settle("nb").await;
    assert_eq!(h.condition("nb", "CredentialsValid").1, "Valid");
    let (status, reason, message) = h.condition("nb", "NocoBaseSynced");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "HostNotAllowed")
    );
    assert!(message.contains("--allowed-nocobase-urls"), "{message}");
    assert_eq!(rec.connections(), 0);
    assert!(
        !h.read_secret("nocobase-api-key"),
        "the API key is not even read"
    );
}

#[tokio::test]
async fn http_is_refused_for_a_listed_host_that_is_not_in_cluster_or_loopback() {
    // listed by name, but http:// to it would carry the API key in clear outside the cluster
    let h = harness(|emu| {
        AllowList::new(
            &[host_port(&emu.uri())],
            &[host_port(&emu.uri())],
            &["nocobase.example.test:*".to_owned()],
        )
        .unwrap()
    })
    .await;
    h.secret("entra", json!({"client-secret": GOOD}));
    h.secret("nocobase-api-key", json!({"api-key": "k3y"}));
    h.integration(
        "clear",
        json!({"nocobase": {"url": "http://nocobase.example.test:13000", "apiKeySecretRef": {"name": "nocobase-api-key"}}}),
    );
    h.settle("clear").await;
    let (_, reason, message) = h.condition("clear", "NocoBaseSynced");
    assert_eq!(reason, "HostNotAllowed");
    assert!(message.contains("https://"), "{message}");
}

#[tokio::test]
async fn a_secret_under_the_managed_name_that_is_not_the_operators_is_left_alone() {
    let h = harness(only_emulator).await;
    h.secret("entra", json!({"client-secret": GOOD}));
    // the user's own Secret, which happens to have the managed name
    h.secret(
        "outlook-microsoft-credentials",
        json!({"db-password": "hunter2-but-longer"}),
    );
    let before = h
        .api
        .get("v1", "Secret", NS, "outlook-microsoft-credentials")
        .unwrap();
    h.api.insert(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nocobase", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "nocobase"}},
            "template": {"metadata": {"labels": {"app": "nocobase"}},
                "spec": {"containers": [{"name": "nocobase", "image": "nocobase/nocobase:2.2.15"}]}}}}));
    h.integration(
        "outlook",
        json!({"targets": [{"deploymentName": "nocobase"}]}),
    );
    h.settle("outlook").await;

    assert_eq!(h.condition("outlook", "CredentialsValid").1, "Valid");
    let (status, reason, message) = h.condition("outlook", "Injected");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ManagedSecretConflict")
    );
    assert!(
        message.contains("nocobase/outlook-microsoft-credentials"),
        "{message}"
    );
    assert_eq!(h.condition("outlook", "Ready").1, "ManagedSecretConflict");
    let after = h
        .api
        .get("v1", "Secret", NS, "outlook-microsoft-credentials")
        .unwrap();
    assert_eq!(after, before, "data, labels and owners untouched");
    assert!(
        !h.api
            .requests()
            .iter()
            .any(|r| r.resource == "secrets" && r.is_write()),
        "no write to any Secret, forced or not"
    );
    let dep = h.api.get("apps/v1", "Deployment", NS, "nocobase").unwrap();
    assert!(dep["spec"]["template"]["spec"]["containers"][0]["env"].is_null());
}

#[tokio::test]
async fn the_operators_own_managed_secret_is_still_updated() {
    let h = harness(only_emulator).await;
    h.secret("entra", json!({"client-secret": GOOD}));
    h.integration("outlook", json!({}));
    h.settle("outlook").await;
    let s = h
        .api
        .get("v1", "Secret", NS, "outlook-microsoft-credentials")
        .expect("created");
    assert_eq!(s["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(h.condition("outlook", "Ready").0, "True");
}

/// A server answering HTTP 200 with a huge body: with `declared`, a `Content-Length` of
/// 400 MiB (and then a trickle); without, an endless body delimited by closing.
async fn huge_body_server(declared: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = if declared {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 419430400\r\n\r\n"
                } else {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
                };
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 64 * 1024];
                while s.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    url
}

#[tokio::test]
async fn huge_answers_from_microsoft_are_refused_not_read() {
    use nocobase_mail_operator::input::{RawCredentials, check};
    use nocobase_mail_operator::microsoft::{MicrosoftClient, Outcome};
    for declared in [true, false] {
        let url = huge_body_server(declared).await;
        let creds = check(&RawCredentials {
            tenant_id: TENANT,
            client_id: CLIENT,
            client_secret: GOOD.as_bytes(),
            cloud: Default::default(),
            authority_host: Some(&url),
            graph_host: Some(&url),
        })
        .unwrap();
        let mut opts = fast_options();
        opts.max_attempts = 1;
        // long enough that reading 400 MiB, or an endless body, would end in a timeout
        opts.request_timeout = std::time::Duration::from_secs(10);
        let v = MicrosoftClient::new(opts)
            .unwrap()
            .validate(&creds, false)
            .await;
        assert_eq!(v.outcome, Outcome::Unavailable, "declared {declared}");
        assert_eq!(
            v.reason,
            Some("UnexpectedResponse"),
            "declared {declared}: {}",
            v.message
        );
        assert!(v.message.contains("1 MiB"), "{}", v.message);
    }
}

#[tokio::test]
async fn huge_answers_from_nocobase_are_refused_not_read() {
    use nocobase_mail_operator::nocobase::{NocoBaseClient, NocoBaseOptions};
    for declared in [true, false] {
        let url = huge_body_server(declared).await;
        let opts = NocoBaseOptions {
            request_timeout: std::time::Duration::from_secs(10),
            ..Default::default()
        };
        let c = NocoBaseClient::new(&url, "k3y".to_owned().into(), None, opts).unwrap();
        let e = c.list().await.unwrap_err();
        assert_eq!(
            e.reason, "UnexpectedResponse",
            "declared {declared}: {}",
            e.message
        );
        assert!(e.message.contains("1 MiB"), "{}", e.message);
    }
}

#[tokio::test]
async fn long_quoted_text_from_microsoft_is_cut() {
    use wiremock::ResponseTemplate;
    let h = harness(only_emulator).await;
    let description = format!("AADSTS99999: {}", "very long words ".repeat(2000));
    h.emu
        .token(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_request",
            "error_description": description,
            "error_codes": [99999],
            "trace_id": "t".repeat(10_000),
            "correlation_id": "c".repeat(10_000),
        })))
        .await;
    h.secret(
        "entra",
        json!({"client-secret": "Zr4Kq8Wm2Xn6Tp1Vb9Lc3Hd7Jf5Gy0Sa4Qe8UoN"}),
    );
    h.integration("long", json!({}));
    h.settle("long").await;
    let (_, reason, message) = h.condition("long", "CredentialsValid");
    assert_eq!(reason, "RejectedByMicrosoft");
    assert!(message.contains("very long words"), "{message}");
    assert!(
        message.chars().count() < 1000,
        "{} characters",
        message.chars().count()
    );
    let status = h.mmi("long").unwrap()["status"].to_string();
    assert!(status.len() < 8000, "status of {} bytes", status.len());
}
