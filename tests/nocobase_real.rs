//! The operator against a real NocoBase 2.2.15 (issue 10): the reconciler runs in-process
//! against the fake Kubernetes API (tests/common/fake_api.rs) and the Microsoft emulator,
//! and writes into a real NocoBase started by `scripts/real-nocobase.sh` (PostgreSQL from
//! Debian, NocoBase from the npm registry). `scripts/test.sh` starts it and sets
//! `NOCOBASE_E2E_URL`, `NOCOBASE_E2E_API_KEY`, `NOCOBASE_E2E_SCRIPT` and
//! `NOCOBASE_REAL_REQUIRED=1`, so in the test command (and whenever `CI` is set) a missing
//! NocoBase fails these tests; a focused local `cargo test` without them skips with a note.
//!
//! Covered: first sync, a quiet period without rewrites, a rejected rotation held back, a
//! valid rotation delivered, a wrong API key, deletion right after a sync (NocoBase
//! restarting) with and without `deleteOnCleanup`, and NocoBase killed and started again
//! while the controller runs. Variable names are `E2E_<pid>_<n>_...`; every test deletes
//! what it created. The tests take turns (one NocoBase, whose restarts all of them see).

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::harness::{self, MMI_AV};
use common::*;
use jiff::Timestamp;
use kube::api::{Api, DeleteParams};
use nocobase_mail_operator::api::MicrosoftMailIntegration;
use nocobase_mail_operator::controller::{Context, reconcile};
use nocobase_mail_operator::nocobase::{Listed, NocoBaseClient, NocoBaseOptions, VarKind};
use secrecy::SecretString;
use serde_json::{Value, json};

const NS: &str = "nocobase";
const GOOD: &str = "Gq7Zx2Lp9Vt4Rk8Wm1Nc6Hb3Jd5Fy0Ts2Qe7UaK";
const GOOD2: &str = "Rw3Yb8Kd1Mx6Pq9Tz4Lc7Hf2Jn5Vg0Sa3Ue8XoD";
const BAD: &str = "Bv5Nq2Wz8Xk3Rm6Tp1Ly4Hd7Jc9Fg0Ss5Ea2UiQ";

/// One NocoBase for all: a test that kills it or makes it refresh must not surprise another.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static SEQ: AtomicUsize = AtomicUsize::new(0);

struct Real {
    url: String,
    key: String,
}

/// The running NocoBase, or `None` (skip) outside the test command.
fn real() -> Option<Real> {
    common::real_nocobase::RealNocoBase::from_env_or_skip().map(|nb| Real {
        url: nb.url,
        key: nb.key,
    })
}

struct Harness {
    api: FakeApi,
    ctx: Arc<Context>,
    clock: Arc<Mutex<Timestamp>>,
    real: Real,
    /// Variable names of this test: `E2E_<pid>_<n>_`.
    prefix: String,
    _microsoft: Emulator,
}

async fn harness(real: Real) -> Harness {
    let api = harness::fake_cluster();
    let microsoft = harness::microsoft(&[GOOD, GOOD2], &[BAD]).await;
    let (clock, clock_fn) = harness::fixed_clock(Timestamp::now());
    let ctx = test_context(
        api.client(),
        allow_exactly(&microsoft.uri(), &[real.url.as_str()]),
        clock_fn,
    );
    let h = Harness {
        api,
        ctx,
        clock,
        real,
        prefix: format!(
            "E2E_{}_{}_",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ),
        _microsoft: microsoft,
    };
    h.secret("entra", GOOD);
    h.set_api_key(&h.real.key.clone());
    h
}

impl Harness {
    fn secret(&self, name: &str, value: &str) {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.encode(value);
        match self.api.get("v1", "Secret", NS, name) {
            Some(mut s) => {
                s["data"]["client-secret"] = json!(data);
                self.api.update(s);
            }
            None => {
                self.api.insert(json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name, "namespace": NS}, "data": {"client-secret": data}}));
            }
        }
    }

    fn set_api_key(&self, key: &str) {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.encode(key);
        match self.api.get("v1", "Secret", NS, "nocobase-api-key") {
            Some(mut s) => {
                s["data"]["api-key"] = json!(data);
                self.api.update(s);
            }
            None => {
                self.api.insert(json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "nocobase-api-key", "namespace": NS}, "data": {"api-key": data}}));
            }
        }
    }

    fn names(&self) -> [String; 3] {
        ["CLIENT_ID", "TENANT_ID", "CLIENT_SECRET"].map(|n| format!("{}{n}", self.prefix))
    }

    fn integration(&self, name: &str, delete_on_cleanup: bool) {
        let [id, tenant, secret] = self.names();
        let emu = self._microsoft.uri();
        self.api.insert(
            json!({"apiVersion": MMI_AV, "kind": "MicrosoftMailIntegration",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"tenantId": TENANT, "clientId": CLIENT,
                "clientSecretRef": {"name": "entra", "key": "client-secret"},
                "authorityHost": emu, "graphHost": emu,
                "nocobase": {"url": self.real.url, "apiKeySecretRef": {"name": "nocobase-api-key"},
                    "variables": {"clientId": id, "tenantId": tenant, "clientSecret": secret},
                    "deleteOnCleanup": delete_on_cleanup}}}),
        );
    }

    fn mmi(&self, name: &str) -> Option<Value> {
        self.api.get(MMI_AV, "MicrosoftMailIntegration", NS, name)
    }

    async fn reconcile(&self, name: &str) -> bool {
        let Some(m) = self.mmi(name) else {
            return false;
        };
        let obj: MicrosoftMailIntegration = serde_json::from_value(m).unwrap();
        reconcile(Arc::new(obj), Arc::clone(&self.ctx))
            .await
            .expect("reconcile");
        true
    }

    fn condition(&self, name: &str, t: &str) -> Option<(String, String, String)> {
        let m = self.mmi(name)?;
        let c = m["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == t)?
            .clone();
        Some((
            c["status"].as_str()?.into(),
            c["reason"].as_str()?.into(),
            c["message"].as_str()?.into(),
        ))
    }

    fn reason(&self, name: &str, t: &str) -> String {
        self.condition(name, t).map(|c| c.1).unwrap_or_default()
    }

    /// Reconciles (as the controller would on each event or requeue) until `done`, at
    /// most `secs` seconds.
    async fn reconcile_until(
        &self,
        name: &str,
        secs: u64,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.reconcile(name).await;
            if done(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached in {secs} s; status: {}",
                self.mmi(name)
                    .map(|m| m["status"].to_string())
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn advance(&self, secs: i64) {
        *self.clock.lock().unwrap() += jiff::SignedDuration::from_secs(secs);
    }

    fn client(&self) -> NocoBaseClient {
        NocoBaseClient::new(
            &self.real.url,
            SecretString::from(self.real.key.clone()),
            None,
            NocoBaseOptions {
                restart_wait: Duration::from_secs(120),
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// This test's variables as NocoBase lists them (waiting out a restart).
    async fn listed(&self) -> Vec<Listed> {
        let all = self
            .client()
            .wait_until_back()
            .await
            .expect("NocoBase lists");
        all.into_iter()
            .filter(|l| l.name.starts_with(&self.prefix))
            .collect()
    }

    async fn updated_at(&self, suffix: &str) -> Option<String> {
        self.listed()
            .await
            .into_iter()
            .find(|l| l.name == format!("{}{suffix}", self.prefix))
            .and_then(|l| l.updated_at)
    }

    /// The plain values NocoBase lists for this test (secrets are listed without value).
    async fn plain_values(&self) -> Vec<(String, Value)> {
        let resp = reqwest::Client::new()
            .get(format!(
                "{}/api/environmentVariables:list?paginate=false",
                self.real.url
            ))
            .bearer_auth(&self.real.key)
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["name"].as_str().unwrap_or("").starts_with(&self.prefix))
            .map(|v| (v["name"].as_str().unwrap().to_owned(), v["value"].clone()))
            .collect()
    }

    async fn delete(&self, name: &str) {
        let api: Api<MicrosoftMailIntegration> = Api::namespaced(self.api.client(), NS);
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }

    /// Removes whatever this test left in NocoBase.
    async fn remove_leftovers(&self) {
        let c = self.client();
        let left = self.listed().await;
        for l in &left {
            c.destroy(&l.name).await.unwrap();
        }
        if !left.is_empty() {
            c.refresh().await.unwrap();
            c.wait_until_back().await.unwrap();
        }
    }

    fn warnings(&self) -> Vec<String> {
        self.api
            .list("events.k8s.io/v1", "Event", NS)
            .iter()
            .filter(|e| e["type"] == "Warning")
            .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// First sync, a quiet hour, a rejected rotation held back, a valid one delivered, a wrong
/// API key, and deletion right after a sync with `deleteOnCleanup`, while NocoBase
/// restarts after a refresh.
#[tokio::test]
async fn sync_rotation_key_and_deletion_against_a_real_nocobase() {
    let Some(real) = real() else { return };
    let _turn = TURN.lock().await;
    let h = harness(real).await;
    let [id, tenant, secret] = h.names();
    h.integration("outlook", true);

    // First sync: three variables with their types, plain values in clear.
    h.reconcile_until("outlook", 120, "first sync", |h| {
        h.reason("outlook", "NocoBaseSynced") == "Synced"
    })
    .await;
    assert_eq!(h.condition("outlook", "Ready").unwrap().0, "True");
    let kinds: Vec<(String, VarKind)> = h
        .listed()
        .await
        .into_iter()
        .map(|l| (l.name, l.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            (id.clone(), VarKind::Default),
            (secret.clone(), VarKind::Secret),
            (tenant.clone(), VarKind::Default),
        ]
    );
    let plain = h.plain_values().await;
    assert!(plain.contains(&(id.clone(), json!(CLIENT))), "{plain:?}");
    assert!(
        plain.contains(&(tenant.clone(), json!(TENANT))),
        "{plain:?}"
    );
    assert!(plain.contains(&(secret.clone(), Value::Null)), "{plain:?}");

    // A quiet hour: nothing is rewritten, nothing refreshed, Ready stays True.
    let before = h.updated_at("CLIENT_SECRET").await;
    let id_before = h.updated_at("CLIENT_ID").await;
    assert!(before.is_some());
    h.advance(3600);
    for _ in 0..3 {
        h.reconcile("outlook").await;
    }
    assert_eq!(h.reason("outlook", "NocoBaseSynced"), "Synced");
    assert_eq!(h.updated_at("CLIENT_SECRET").await, before);
    assert_eq!(h.updated_at("CLIENT_ID").await, id_before);

    // A rotation Microsoft rejects is held back: NocoBase keeps the validated secret.
    h.secret("entra", BAD);
    h.reconcile_until("outlook", 60, "rejection", |h| {
        h.condition("outlook", "CredentialsValid")
            .is_some_and(|c| c.0 == "False")
    })
    .await;
    assert_eq!(h.updated_at("CLIENT_SECRET").await, before);
    let (status, _, message) = h.condition("outlook", "NocoBaseSynced").unwrap();
    assert_eq!(status, "True", "{message}");
    assert!(message.contains("still holds"), "{message}");

    // A valid rotation is delivered: only the secret is written.
    h.secret("entra", GOOD2);
    h.reconcile_until("outlook", 120, "rotation", |h| {
        h.reason("outlook", "NocoBaseSynced") == "Synced"
            && h.condition("outlook", "CredentialsValid")
                .is_some_and(|c| c.0 == "True")
    })
    .await;
    let after = h.updated_at("CLIENT_SECRET").await;
    assert_ne!(after, before, "the secret was rewritten");
    assert_eq!(h.updated_at("CLIENT_ID").await, id_before);

    // A wrong API key: ApiKeyRejected once NocoBase answers, never "unreachable".
    h.set_api_key("eyJhbGciOiJIUzI1NiJ9.bm90LWEta2V5.c2lnbmF0dXJl");
    h.secret("entra", GOOD);
    h.reconcile_until("outlook", 120, "ApiKeyRejected", |h| {
        h.reason("outlook", "NocoBaseSynced") == "ApiKeyRejected"
    })
    .await;
    assert_eq!(h.reason("outlook", "Ready"), "ApiKeyRejected");
    assert_eq!(h.updated_at("CLIENT_SECRET").await, after);
    h.set_api_key(&h.real.key.clone());
    h.reconcile_until("outlook", 120, "recovery", |h| {
        h.reason("outlook", "NocoBaseSynced") == "Synced"
    })
    .await;

    // Deletion right after a sync: NocoBase is restarting (a refresh, as after every
    // write); the operator waits for it and deletes its variables.
    h.client().refresh().await.unwrap();
    h.delete("outlook").await;
    h.reconcile_until("outlook", 180, "deletion", |h| h.mmi("outlook").is_none())
        .await;
    assert!(h.listed().await.is_empty(), "variables deleted");
    let warnings = h.warnings();
    assert!(
        !warnings.iter().any(|w| w == "NocoBaseCleanupFailed"),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w == "NocoBaseUnreachable"),
        "a restart is not reported as unreachable: {warnings:?}"
    );
    h.remove_leftovers().await;
}

/// Without `deleteOnCleanup`, deleting the integration right after a sync leaves every
/// variable in NocoBase and sends nothing.
#[tokio::test]
async fn deletion_without_delete_on_cleanup_keeps_the_variables() {
    let Some(real) = real() else { return };
    let _turn = TURN.lock().await;
    let h = harness(real).await;
    h.integration("kept", false);
    h.reconcile_until("kept", 120, "first sync", |h| {
        h.reason("kept", "NocoBaseSynced") == "Synced"
    })
    .await;
    h.delete("kept").await;
    h.reconcile_until("kept", 60, "deletion", |h| h.mmi("kept").is_none())
        .await;
    assert_eq!(h.listed().await.len(), 3, "nothing deleted without opt-in");
    h.remove_leftovers().await;
}

/// Waits (the controller works meanwhile) until `done`, at most `secs` seconds.
async fn wait(what: &str, secs: u64, done: &dyn Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not reached in {secs} s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn script(action: &str) {
    let script = std::env::var("NOCOBASE_E2E_SCRIPT")
        .unwrap_or_else(|_| format!("{}/scripts/real-nocobase.sh", env!("CARGO_MANIFEST_DIR")));
    let status = Command::new("bash")
        .arg(&script)
        .arg(action)
        .status()
        .unwrap_or_else(|e| panic!("{script} {action}: {e}"));
    assert!(status.success(), "{script} {action}: {status}");
}

/// NocoBase killed (by pid) and started again while the controller runs: the operator
/// reports it unreachable, then delivers the change made meanwhile once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nocobase_killed_and_started_while_the_controller_runs() {
    let Some(real) = real() else { return };
    let _turn = TURN.lock().await;
    let h = harness(real).await;
    h.integration("running", true);
    let ready = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(nocobase_mail_operator::controller::run_controller(
        h.api.client(),
        Some(NS.into()),
        Arc::clone(&h.ctx),
        nocobase_mail_operator::controller::CacheSync::new(1, ready),
    ));
    wait("first sync", 120, &|| {
        h.reason("running", "NocoBaseSynced") == "Synced"
    })
    .await;
    let before = h.updated_at("CLIENT_SECRET").await;

    script("app-stop");
    h.secret("entra", GOOD2);
    wait("NocoBaseUnreachable while it is down", 60, &|| {
        h.reason("running", "NocoBaseSynced") == "NocoBaseUnreachable"
    })
    .await;
    script("app-start");
    // Unreachable is retried within 30 s; the restart itself may still answer 503 a while.
    wait("the rotation delivered after the restart", 180, &|| {
        h.reason("running", "NocoBaseSynced") == "Synced"
    })
    .await;
    assert_ne!(h.updated_at("CLIENT_SECRET").await, before);
    assert_eq!(h.condition("running", "Ready").unwrap().0, "True");

    h.delete("running").await;
    wait("deletion", 180, &|| h.mmi("running").is_none()).await;
    task.abort();
    assert!(h.listed().await.is_empty(), "variables deleted");
    h.remove_leftovers().await;
}
