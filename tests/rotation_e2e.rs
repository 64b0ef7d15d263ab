//! Rotation end to end: the reconciler against the fake Kubernetes API, the stateful Entra
//! emulator and the NocoBase emulator. A full rotation with a target Deployment (its rollout
//! simulated through its status), NocoBase synced and the old password removed only after
//! retireAfter; every failure leaves the old secret working; no secret Value in logs,
//! Events, status, metrics or requests.

mod common;

use std::sync::{Arc, Mutex};

use base64::Engine;
use common::entra::*;
use common::fake_api::FakeApi;
use common::harness::{self, MMI_AV};
use common::nocobase_emu::{API_KEY as NOCOBASE_KEY, NocoBase};
use common::*;
use jiff::Timestamp;
use nocobase_mail_operator::api::MicrosoftMailIntegration;
use nocobase_mail_operator::controller::{Context, reconcile};
use nocobase_mail_operator::microsoft::MicrosoftClient;
use nocobase_mail_operator::rbac::{
    LEADER_ELECTION_RULES, NAMESPACE_DELETION_RULES, OPERATOR_NAMESPACE_RULES,
    WATCHED_NAMESPACE_RULES,
};
use serde_json::{Value, json};

const NS: &str = "nocobase";
const OLD: &str = "Hv3Nq7Zk2Wx9Lp4Tb8Rm1Cd6Jf5Gy0Ss2Qe7UaX";
const T0: &str = "2026-11-25T12:00:00Z";

struct H {
    api: FakeApi,
    app: EntraApp,
    nb: NocoBase,
    nb_uri: String,
    ctx: Arc<Context>,
    clock: Arc<Mutex<Timestamp>>,
    _nb_server: wiremock::MockServer,
}

async fn harness() -> H {
    harness::capture_logs();
    let api = harness::fake_cluster();
    let app = EntraApp::start(OLD, "2027-01-01T00:00:00Z").await;
    let nb = NocoBase {
        state: Arc::default(),
        app: None,
        plugin_enabled: true,
    };
    let nb_server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path_regex("^/"))
        .respond_with(nb.clone())
        .mount(&nb_server)
        .await;
    let (clock, clock_fn) = harness::fixed_clock(T0.parse().unwrap());
    let ctx = test_context(
        api.client(),
        allow_exactly(&app.uri(), &[nb_server.uri().as_str()]),
        clock_fn,
    );
    H {
        api,
        nb_uri: nb_server.uri(),
        _nb_server: nb_server,
        app,
        nb,
        ctx,
        clock,
    }
}

impl H {
    /// The user's Secret, an integration with rotation on (retireAfter 1h), a target
    /// Deployment with 2 ready replicas, and NocoBase's API key.
    fn setup(&self, rotation: Value) {
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        // the Secret's owner consents to the integration rotating the credential it holds
        self.api.insert(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "entra", "namespace": NS,
                "annotations": {"nocobase-mail-operator.dev/rotation-allowed-for": "outlook"}},
            "data": {"client-secret": b64(OLD)}}));
        self.api.insert(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nocobase-api-key", "namespace": NS},
            "data": {"api-key": b64(NOCOBASE_KEY)}}));
        self.api.insert(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "nocobase", "namespace": NS, "labels": {"app": "nocobase"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "nocobase"}},
                "template": {"metadata": {"labels": {"app": "nocobase"}},
                    "spec": {"containers": [{"name": "nocobase", "image": "nocobase/nocobase:2.2.15"}]}}}}));
        self.rolled_out();
        self.api.insert(
            json!({"apiVersion": MMI_AV, "kind": "MicrosoftMailIntegration",
            "metadata": {"name": "outlook", "namespace": NS},
            "spec": {"tenantId": TENANT, "clientId": CLIENT, "clientSecretRef": {"name": "entra"},
                "authorityHost": self.app.uri(), "graphHost": self.app.uri(),
                "secretExpiry": {"expiresAt": "2027-01-01T00:00:00Z", "discoverFromGraph": false},
                "targets": [{"deploymentName": "nocobase"}],
                "nocobase": {"url": self.nb_uri, "apiKeySecretRef": {"name": "nocobase-api-key"}},
                "rotation": rotation}}),
        );
    }

    /// Simulates the Deployment controller finishing the rollout of the current template.
    fn rolled_out(&self) {
        let mut d = self
            .api
            .get("apps/v1", "Deployment", NS, "nocobase")
            .unwrap();
        let g = d["metadata"]["generation"].as_i64().unwrap_or(1);
        d["status"] = json!({"observedGeneration": g, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2});
        self.api.update_status(d);
    }

    fn half_rolled(&self) {
        let mut d = self
            .api
            .get("apps/v1", "Deployment", NS, "nocobase")
            .unwrap();
        let g = d["metadata"]["generation"].as_i64().unwrap_or(1);
        d["status"] = json!({"observedGeneration": g, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2});
        self.api.update_status(d);
    }

    fn mmi(&self) -> Value {
        self.api
            .get(MMI_AV, "MicrosoftMailIntegration", NS, "outlook")
            .unwrap()
    }

    async fn reconcile(&self) {
        let obj: MicrosoftMailIntegration = serde_json::from_value(self.mmi()).unwrap();
        reconcile(Arc::new(obj), Arc::clone(&self.ctx))
            .await
            .expect("reconcile");
    }

    async fn rounds(&self, n: usize) {
        for _ in 0..n {
            self.reconcile().await;
        }
    }

    /// Reconciles until the rotation reaches `phase` (at most `max` rounds).
    async fn until_phase(&self, phase: &str, max: usize) {
        for _ in 0..max {
            if self.phase() == phase {
                return;
            }
            self.reconcile().await;
        }
        assert_eq!(self.phase(), phase, "status: {}", self.mmi()["status"]);
    }

    fn phase(&self) -> String {
        self.mmi()["status"]["rotation"]["phase"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    fn rotation(&self) -> Value {
        self.mmi()["status"]["rotation"].clone()
    }

    fn condition(&self, t: &str) -> (String, String) {
        let m = self.mmi();
        let c = m["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap_or_else(|| panic!("no {t} in {}", m["status"]));
        (
            c["status"].as_str().unwrap().into(),
            c["reason"].as_str().unwrap().into(),
        )
    }

    fn secret_data(&self, name: &str) -> Value {
        self.api.get("v1", "Secret", NS, name).unwrap()["data"].clone()
    }

    fn secret_value(&self, name: &str, key: &str) -> Option<String> {
        self.secret_data(name)[key].as_str().map(|b| {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap()
        })
    }

    fn events(&self) -> Vec<(String, String, String)> {
        self.api
            .list("events.k8s.io/v1", "Event", NS)
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_owned(),
                    e["reason"].as_str().unwrap_or_default().to_owned(),
                    e["note"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    fn annotate(&self, key: &str, at: &str) {
        let mut m = self.mmi();
        m["metadata"]["annotations"] = json!({key: at});
        self.api.update(m);
    }

    fn advance(&self, secs: i64) {
        *self.clock.lock().unwrap() += jiff::SignedDuration::from_secs(secs);
    }

    fn now(&self) -> Timestamp {
        *self.clock.lock().unwrap()
    }

    fn nocobase_secret(&self) -> Option<String> {
        self.nb
            .state
            .lock()
            .unwrap()
            .vars
            .get("MICROSOFT_CLIENT_SECRET")
            .map(|v| v.value.clone())
    }

    async fn works(&self, secret: &str) -> bool {
        let uri = self.app.uri();
        let creds =
            nocobase_mail_operator::input::check(&nocobase_mail_operator::input::RawCredentials {
                tenant_id: TENANT,
                client_id: CLIENT,
                client_secret: secret.as_bytes(),
                cloud: Default::default(),
                authority_host: Some(&uri),
                graph_host: Some(&uri),
            })
            .unwrap();
        let v = MicrosoftClient::new(fast_options())
            .unwrap()
            .validate(&creds, false)
            .await;
        v.outcome == nocobase_mail_operator::microsoft::Outcome::Valid
    }

    /// Nothing emitted anywhere holds a secret Value: logs, Events, status, metrics, and
    /// every request body except the Secrets themselves.
    fn scan(&self) {
        let created = self.app.created_secrets();
        let mut secrets: Vec<&str> = created.iter().map(String::as_str).collect();
        secrets.push(OLD);
        let logs = harness::logs();
        assert_no_secret(&logs, &secrets);
        assert_no_secret(&format!("{:?}", self.events()), &secrets);
        assert_no_secret(&self.mmi()["status"].to_string(), &secrets);
        assert_no_secret(&self.mmi()["metadata"].to_string(), &secrets);
        assert_no_secret(&self.ctx.metrics.encode(), &secrets);
        for r in self.api.requests() {
            if r.resource == "secrets" {
                continue;
            }
            if let Some(b) = &r.body {
                assert_no_secret(&b.to_string(), &secrets);
            }
        }
    }

    fn assert_rbac_covers(&self) {
        let rules: Vec<_> = WATCHED_NAMESPACE_RULES
            .iter()
            .chain(LEADER_ELECTION_RULES)
            .chain(OPERATOR_NAMESPACE_RULES)
            .chain(NAMESPACE_DELETION_RULES)
            .collect();
        for r in self.api.requests() {
            let resource = match &r.subresource {
                Some(s) => format!("{}/{s}", r.resource),
                None => r.resource.clone(),
            };
            assert!(
                rules.iter().any(|rule| rule.api_group == r.api_group
                    && rule.resource == resource
                    && rule.verbs.contains(&r.verb.as_str())),
                "RBAC lacks {} on {}/{resource}",
                r.verb,
                r.api_group
            );
        }
    }
}

fn on() -> Value {
    json!({"enabled": true, "retireAfter": "1h"})
}

#[tokio::test]
async fn full_rotation_with_rollout_nocobase_and_approval() {
    let h = harness().await;
    h.setup(on());
    h.rounds(2).await; // finalizer, then: validated, injected, synced, rotation begun
    assert_eq!(h.condition("CredentialsValid").0, "True");
    assert_eq!(h.nocobase_secret().as_deref(), Some(OLD));
    assert_eq!(h.phase(), "Creating");
    let attempt = h.rotation()["attemptId"].as_str().unwrap().to_owned();
    assert_eq!(
        h.app.state().added,
        0,
        "the attempt ID is recorded before anything is created"
    );

    h.reconcile().await; // addPassword, then the Secret
    assert_eq!(h.phase(), "Validating");
    let new = h.app.created_secrets()[0].clone();
    assert_eq!(
        h.secret_value("entra", "client-secret").as_deref(),
        Some(new.as_str())
    );
    assert_eq!(
        h.secret_value("entra", "client-secret.previous").as_deref(),
        Some(OLD)
    );
    let names: Vec<Option<String>> = h
        .app
        .state()
        .creds
        .iter()
        .map(|c| c.display_name.clone())
        .collect();
    assert!(names.iter().flatten().any(|n| n.contains(&attempt)));
    let managed = h.secret_value("outlook-microsoft-credentials", "client-secret");
    assert_eq!(
        managed.as_deref(),
        Some(OLD),
        "nothing downstream changes until it validates"
    );

    // propagation: refused twice with AADSTS7000215, then accepted
    h.rounds(2).await;
    assert_eq!(h.phase(), "Validating");
    assert_eq!(
        h.condition("Ready").0,
        "True",
        "propagation does not disturb Ready"
    );
    assert_eq!(h.nocobase_secret().as_deref(), Some(OLD));
    h.reconcile().await;
    assert_eq!(h.phase(), "Delivering");

    // delivery through the existing paths
    h.rounds(2).await;
    assert_eq!(
        h.secret_value("outlook-microsoft-credentials", "client-secret")
            .as_deref(),
        Some(new.as_str())
    );
    assert_eq!(h.nocobase_secret().as_deref(), Some(new.as_str()));
    assert_eq!(
        h.rotation()["reason"],
        "AwaitingRollout",
        "{}",
        h.rotation()
    );
    h.half_rolled();
    h.reconcile().await;
    assert!(
        h.rotation()["message"]
            .as_str()
            .unwrap()
            .contains("1 of 2 replicas updated"),
        "{} {}",
        h.rotation(),
        h.api.get("apps/v1", "Deployment", NS, "nocobase").unwrap()
    );
    h.rolled_out();
    h.reconcile().await;
    // the operator does not write the email manager's settings: approval needed
    assert_eq!(h.rotation()["reason"], "AwaitingRetireApproval");
    assert!(
        h.events()
            .iter()
            .any(|e| e.1 == "AwaitingRetireApproval" && e.2.contains("--approve-retire"))
    );
    assert!(h.works(OLD).await && h.works(&new).await);

    h.annotate(
        "nocobase-mail-operator.dev/retire-approved-at",
        &h.now().to_string(),
    );
    h.reconcile().await;
    assert_eq!(h.phase(), "Retiring");
    // not before retireAfter
    h.advance(3599);
    h.rounds(2).await;
    assert_eq!(h.phase(), "Retiring");
    assert!(h.works(OLD).await);
    h.advance(1);
    h.reconcile().await;
    assert_eq!(h.phase(), "Idle", "{}", h.rotation());
    assert!(!h.works(OLD).await, "the old password was removed");
    assert!(h.works(&new).await);
    assert_eq!(h.secret_value("entra", "client-secret.previous"), None);
    assert_eq!(h.condition("Rotated"), ("True".into(), "Rotated".into()));
    assert_eq!(h.app.key_ids().len(), 1);
    // the new secret's own end date is the expiry now (not the stated one)
    h.rounds(2).await;
    let exp = h.mmi()["status"]["secretExpiry"]["expiresAt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(exp.starts_with("2027-05-2"), "{exp}");
    assert_eq!(h.phase(), "Idle");
    let reasons: Vec<String> = h.events().into_iter().map(|e| e.1).collect();
    for r in [
        "RotationStarted",
        "NewSecretCreated",
        "NewSecretAccepted",
        "NewSecretDelivered",
        "Rotated",
    ] {
        assert!(reasons.iter().any(|x| x == r), "{r} in {reasons:?}");
    }
    let metrics = h.ctx.metrics.encode();
    assert!(
        metrics.contains("nocobase_mail_rotations_total{outcome=\"Succeeded\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "nocobase_mail_last_rotation_timestamp_seconds{namespace=\"nocobase\",name=\"outlook\"}"
    ));
    h.scan();
    h.assert_rbac_covers();
}

/// Drives a fresh integration until its first attempt ended, for the failure cases.
async fn failing(setup: impl Fn(&H)) -> H {
    let h = harness().await;
    setup(&h);
    h.setup(on());
    h.rounds(3).await;
    h
}

async fn assert_old_still_in_place(h: &H) {
    assert_eq!(
        h.secret_value("entra", "client-secret").as_deref(),
        Some(OLD)
    );
    assert_eq!(h.secret_value("entra", "client-secret.previous"), None);
    assert_eq!(
        h.secret_value("outlook-microsoft-credentials", "client-secret")
            .as_deref(),
        Some(OLD)
    );
    assert_eq!(h.nocobase_secret().as_deref(), Some(OLD));
    assert!(h.works(OLD).await);
    assert_eq!(h.condition("CredentialsValid").0, "True");
}

#[tokio::test]
async fn not_owner_fails_safe() {
    let h = failing(|h| h.app.state().owner = false).await;
    assert_eq!(h.phase(), "Failed");
    assert_eq!(h.condition("Rotated"), ("False".into(), "NotOwner".into()));
    assert_eq!(h.app.state().added, 0);
    assert!(
        h.events()
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "NotOwner")
    );
    assert_old_still_in_place(&h).await;
    // secret at risk (within 30 days): Ready says so, still True
    h.advance(86400 * 10);
    h.rounds(2).await;
    assert_eq!(h.condition("Ready"), ("True".into(), "NotOwner".into()));
    let m = h.ctx.metrics.encode();
    assert!(
        m.contains("nocobase_mail_rotations_total{outcome=\"Failed\"}"),
        "{m}"
    );
    assert!(m.contains("nocobase_mail_rotation_failing_since_timestamp_seconds{"));
    h.scan();
}

#[tokio::test]
async fn policy_refusal_fails_safe() {
    let h =
        failing(|h| h.app.state().max_lifetime = Some(jiff::SignedDuration::from_hours(24 * 90)))
            .await;
    assert_eq!(
        h.condition("Rotated"),
        ("False".into(), "PolicyRefused".into())
    );
    assert!(
        h.rotation()["message"]
            .as_str()
            .unwrap()
            .contains("Shorten spec.rotation.lifetime")
    );
    assert_old_still_in_place(&h).await;
    // with an allowed lifetime the next attempt (after backoff) succeeds in creating
    let mut m = h.mmi();
    m["spec"]["rotation"]["lifetime"] = json!("2000h");
    h.api.update(m);
    h.advance(301);
    h.until_phase("Validating", 4).await;
}

#[tokio::test]
async fn a_new_secret_that_never_works_is_removed_and_the_old_restored() {
    let h = failing(|h| h.app.state().never_propagate = true).await;
    assert_eq!(h.phase(), "Validating");
    let new_key = h.rotation()["newKeyId"].as_str().unwrap().to_owned();
    for _ in 0..4 {
        h.advance(150);
        h.reconcile().await;
    }
    assert_eq!(h.phase(), "Failed");
    assert_eq!(h.condition("Rotated").1, "NewSecretNotAccepted");
    h.rounds(2).await; // cleanup
    assert!(
        !h.app.key_ids().contains(&new_key),
        "the undelivered credential was removed"
    );
    assert_eq!(h.rotation()["newKeyId"], Value::Null);
    assert_old_still_in_place(&h).await;
    h.scan();
}

#[tokio::test]
async fn crash_between_add_password_and_the_secret_write() {
    let h = harness().await;
    h.setup(on());
    h.rounds(2).await;
    assert_eq!(h.phase(), "Creating");
    let attempt = h.rotation()["attemptId"].as_str().unwrap().to_owned();
    // what a crash right after addPassword leaves: a credential named after the attempt,
    // whose Value nobody stored
    let orphan = h.app.add_existing(
        &portal_secret(900),
        Some(&nocobase_mail_operator::rotation::display_name(&attempt)),
        "2027-05-01T00:00:00Z",
    );
    h.reconcile().await;
    assert!(
        !h.app.key_ids().contains(&orphan),
        "the orphan was found by its displayName and removed"
    );
    assert_eq!(h.phase(), "Validating");
    assert!(
        h.rotation()["message"]
            .as_str()
            .unwrap()
            .contains("1 credential(s) left by an interrupted attempt")
    );
    assert_eq!(h.app.key_ids().len(), 2, "old + exactly one new");
}

#[tokio::test]
async fn a_failed_secret_write_takes_the_new_credential_back() {
    let h = harness().await;
    h.setup(on());
    h.rounds(2).await;
    h.api.set_fail_next("patch", "secrets", 500);
    h.reconcile().await;
    assert_eq!(h.phase(), "Creating");
    assert_eq!(
        h.app.key_ids().len(),
        1,
        "created, not stored, removed again"
    );
    assert_old_still_in_place(&h).await;
    h.reconcile().await;
    assert_eq!(h.phase(), "Validating");
}

#[tokio::test]
async fn a_stuck_rollout_keeps_the_old_secret() {
    let h = harness().await;
    h.setup(on());
    h.until_phase("Delivering", 8).await;
    h.rounds(2).await;
    h.half_rolled();
    h.advance(3600);
    h.rounds(2).await;
    assert_eq!(
        h.condition("Rotated"),
        ("False".into(), "RolloutStuck".into())
    );
    assert!(
        h.events()
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "RolloutStuck")
    );
    assert!(
        h.works(OLD).await,
        "nothing is retired while a rollout is stuck"
    );
    assert_eq!(h.phase(), "Delivering");
}

#[tokio::test]
async fn several_credentials_with_the_old_hint_are_left_alone() {
    let h = harness().await;
    h.setup(on());
    h.until_phase("Validating", 4).await;
    // a second credential appears with the old one's hint, unknown to the rotation
    let twin = h.app.add_foreign(&OLD[..3], "another tool");
    let mut st = h.mmi();
    st["status"]["rotation"]["oldKeyId"] = Value::Null;
    h.api.update_status(st);
    h.until_phase("Delivering", 4).await;
    h.rounds(2).await;
    h.rolled_out();
    h.annotate(
        "nocobase-mail-operator.dev/retire-approved-at",
        &h.now().to_string(),
    );
    h.until_phase("Retiring", 3).await;
    h.advance(3600);
    h.until_phase("Idle", 2).await;
    assert!(h.works(OLD).await, "not guessed: left in place");
    assert!(h.app.key_ids().contains(&twin));
    assert!(
        h.rotation()["message"]
            .as_str()
            .unwrap()
            .contains("share the old secret's hint"),
        "{}",
        h.rotation()
    );
}

#[tokio::test]
async fn requested_rotation_and_unknown_expiry() {
    let h = harness().await;
    h.setup(json!({"enabled": true}));
    let mut m = h.mmi();
    m["spec"]["secretExpiry"] = json!({"discoverFromGraph": false});
    h.api.update(m);
    h.rounds(3).await;
    assert_eq!(
        h.condition("Rotated"),
        ("False".into(), "ExpiryUnknown".into())
    );
    assert_eq!(h.app.state().added, 0);
    // with a far expiry nothing is due, until a rotation is requested
    let mut m = h.mmi();
    m["spec"]["secretExpiry"] =
        json!({"expiresAt": "2028-01-01T00:00:00Z", "discoverFromGraph": false});
    h.api.update(m);
    h.rounds(2).await;
    assert_eq!(h.phase(), "Idle");
    let msg = nocobase_mail_operator::controller::rotate::request(
        h.api.client(),
        NS,
        "outlook",
        false,
        h.now(),
    )
    .await
    .unwrap();
    assert!(msg.contains("Requested a rotation of nocobase/outlook"));
    h.advance(1);
    h.rounds(2).await;
    assert_eq!(h.phase(), "Validating");
    h.assert_rbac_covers();
}
