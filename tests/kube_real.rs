//! The program a user meets, on a real Kubernetes control plane (kube-apiserver 1.20 with
//! etcd, the garbage collector, the namespace, Deployment and token controllers; no
//! kubelet): the chart installed with the real `helm`, the operator binary as its own
//! process under the chart's ServiceAccount token and arguments, resources applied with
//! kubectl as a user does, the Microsoft emulator on loopback, and the API server's audit
//! log read for every write and every 403.
//!
//! Runs against the cluster of `scripts/real-kube.sh` (`bash scripts/test.sh` starts it;
//! by hand: `bash scripts/real-kube.sh start && source "$(bash scripts/real-kube.sh env)"`),
//! or any cluster with `USE_EXISTING_CLUSTER=true` and `KUBECONFIG`. Skips, saying so,
//! without one, unless `KUBE_REAL_REQUIRED=1` (the test command) or CI.
//!
//! What only a real API server decides is shown here rather than on the in-process fake
//! (`tests/common/fake_api.rs`): field ownership read from `managedFields` (the hand-over
//! from the shared field manager of earlier versions), a conflict between field managers
//! found by the server, and the garbage collector removing the managed Secret.
//!
//! Each test has namespaces of its own and a release watching only them, so the tests run
//! in parallel; the one test of the default (all-namespace) install takes the suite's
//! lock alone.

mod common;

use std::time::Duration;
use tokio::sync::RwLock;

use common::cluster::*;
use common::entra::EntraApp;
use common::real_kube::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use nocobase_mail_operator::inject::{
    FIELD_MANAGER, FINGERPRINT_ANNOTATION, KEY_CLIENT_ID, KEY_CLIENT_SECRET, KEY_TENANT_ID,
    field_manager, managed_secret_name,
};
use serde_json::json;

/// Shared by the tests of a namespaced release, taken alone by the all-namespace one (whose
/// operator would otherwise act on every other test's integrations too).
static SUITE: RwLock<()> = RwLock::const_new(());

#[tokio::test]
async fn rotate_and_approve_retire_are_acted_on_within_seconds_through_the_watch() {
    let _suite = SUITE.read().await;
    let Some(env) = Env::new("rotate").await else {
        return;
    };
    let app = EntraApp::start(OLD, FAR).await;
    let mark = env.kube.audit().map_or(0, |a| a.mark());
    let release = env.release("rot", &app, &[]);
    let mut op = env.run(&release).await;

    // the Secret's owner consents to the integration rotating the credential it holds
    let mut secret = user_secret("entra", OLD);
    secret["metadata"]["annotations"] =
        json!({"nocobase-mail-operator.dev/rotation-allowed-for": "outlook"});
    env.apply(&secret);
    env.apply(&nocobase_deployment("nocobase"));
    env.apply(&integration(
        "outlook",
        &app,
        json!({"rotation": {"enabled": true, "retireAfter": "1m"}}),
    ));
    env.wait_condition("outlook", "Ready", ("True", "Ready"), 30)
        .await;
    assert_eq!(env.phase("outlook").await.0, "Idle");
    // quiet for a moment: nothing but the request below can start a rotation
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.state().added, 0, "no rotation before it is asked for");

    env.cli(&["rotate", "outlook", "-n", &env.ns]);
    eventually(
        "the rotation request acted on (a new secret in Entra)",
        10,
        || async { app.state().added == 1 },
    )
    .await;
    eventually(
        "the new secret delivered, awaiting approval",
        60,
        || async {
            env.phase("outlook").await == ("Delivering".into(), "AwaitingRetireApproval".into())
        },
    )
    .await;

    env.cli(&["rotate", "outlook", "-n", &env.ns, "--approve-retire"]);
    eventually("the approval acted on (Retiring)", 10, || async {
        env.phase("outlook").await.0 == "Retiring"
    })
    .await;

    stop_clean(&env, &mut op, &release, mark, &[OLD]);
    env.cleanup().await;
}

#[tokio::test]
async fn deletion_releases_the_deployment_gc_removes_the_managed_secret_and_nothing_warns() {
    let _suite = SUITE.read().await;
    let Some(env) = Env::new("delete").await else {
        return;
    };
    let app = EntraApp::start(OLD, FAR).await;
    let mark = env.kube.audit().map_or(0, |a| a.mark());
    let release = env.release("del", &app, &[]);
    let mut op = env.run(&release).await;

    env.apply(&user_secret("entra", OLD));
    env.apply(&nocobase_deployment("nocobase"));
    env.apply(&integration("outlook", &app, json!({})));
    env.wait_condition("outlook", "Ready", ("True", "Ready"), 30)
        .await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let managed = "outlook-microsoft-credentials";
    assert!(secrets.get_opt(managed).await.unwrap().is_some());
    let fin = env.mmi("outlook").await["metadata"]["finalizers"].clone();
    assert_eq!(fin, json!(["nocobase-mail-operator.dev/cleanup"]));

    env.kube
        .kubectl_ok(&["delete", "mmi", "outlook", "-n", &env.ns, "--timeout=30s"]);
    let mmis = env.mmis();
    eventually("the integration gone", 30, || async {
        mmis.get_opt("outlook").await.unwrap().is_none()
    })
    .await;
    eventually("the managed Secret collected", 30, || async {
        secrets.get_opt(managed).await.unwrap().is_none()
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let d = serde_json::to_value(deployments.get("nocobase").await.unwrap()).unwrap();
    let env_names: Vec<&str> = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        env_names,
        ["APP_KEY"],
        "the Deployment given back as it was"
    );
    // a few seconds for late reconciles of the deleted object
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_clean(&env, &mut op, &release, mark, &[OLD]);
    env.cleanup().await;
}

/// A `kubectl apply --server-side` of `doc` as the field manager `manager` (a partial
/// configuration: kubectl 1.20 would refuse it on the client, the server checks it).
fn server_side_apply(env: &Env, manager: &str, doc: &serde_json::Value) {
    let file = env.dir.path().join(format!("{manager}.json"));
    std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
    let manager = format!("--field-manager={manager}");
    let f = file.to_str().unwrap();
    let apply = ["apply", "--server-side", "--validate=false", &manager];
    env.kube
        .kubectl_ok(&[&apply[..], &["-n", &env.ns, "-f", f]].concat());
}

/// The env entries each field manager that applies holds in the `nocobase` container, from
/// the Deployment's managedFields (managers holding none left out).
fn applied_env(d: &Deployment) -> Vec<(String, Vec<String>)> {
    let applies = d.metadata.managed_fields.iter().flatten();
    let applies = applies.filter(|e| e.operation.as_deref() == Some("Apply"));
    applies
        .map(|e| {
            let f = serde_json::to_value(&e.fields_v1).unwrap();
            let containers = &f["f:spec"]["f:template"]["f:spec"]["f:containers"];
            let env = containers["k:{\"name\":\"nocobase\"}"]["f:env"].as_object();
            let keys = env
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.strip_prefix("k:"));
            let names = keys.filter_map(|k| {
                let k: serde_json::Value = serde_json::from_str(k).ok()?;
                k["name"].as_str().map(str::to_owned)
            });
            let mut names: Vec<String> = names.collect();
            names.sort();
            (e.manager.clone().unwrap_or_default(), names)
        })
        .filter(|(_, names)| !names.is_empty())
        .collect()
}

fn fingerprint(d: &Deployment) -> Option<String> {
    let template = d.spec.as_ref()?.template.metadata.as_ref()?;
    template
        .annotations
        .as_ref()?
        .get(FINGERPRINT_ANNOTATION)
        .cloned()
}

fn env_names(d: &Deployment) -> Vec<String> {
    let pod = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let env = pod
        .and_then(|p| p.containers[0].env.clone())
        .unwrap_or_default();
    env.into_iter().map(|e| e.name).collect()
}

/// An upgrade from a version that applied every Deployment as the one shared field manager
/// `nocobase-mail-operator`: the integration's own manager takes its fields over with
/// nothing removed on the way (one rollout, for the new fingerprint), the shared manager
/// holds nothing afterwards (read from managedFields), and deleting the integration gives
/// the Deployment back as it was.
#[tokio::test]
async fn the_shared_field_manager_of_earlier_versions_hands_its_fields_over() {
    let _suite = SUITE.read().await;
    let Some(env) = Env::new("handover").await else {
        return;
    };
    let app = EntraApp::start(OLD, FAR).await;
    let mark = env.kube.audit().map_or(0, |a| a.mark());
    let release = env.release("hand", &app, &[]);
    env.apply(&user_secret("entra", OLD));
    env.apply(&nocobase_deployment("nocobase"));
    // what an earlier version applied: the three entries reading the managed Secret
    let entries: Vec<_> = [
        ("MICROSOFT_CLIENT_ID", KEY_CLIENT_ID),
        ("MICROSOFT_CLIENT_SECRET", KEY_CLIENT_SECRET),
        ("MICROSOFT_TENANT_ID", KEY_TENANT_ID),
    ]
    .iter()
    .map(|(name, key)| {
        json!({"name": name, "valueFrom": {"secretKeyRef": {
            "name": managed_secret_name("outlook"), "key": key}}})
    })
    .collect();
    let earlier = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nocobase"},
        "spec": {"template": {"metadata": {"annotations": {FINGERPRINT_ANNOTATION: "earlier"}},
            "spec": {"containers": [{"name": "nocobase", "env": entries}]}}}});
    server_side_apply(&env, FIELD_MANAGER, &earlier);
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let before = deployments.get("nocobase").await.unwrap();
    let wanted = [
        "MICROSOFT_CLIENT_ID",
        "MICROSOFT_CLIENT_SECRET",
        "MICROSOFT_TENANT_ID",
    ];
    let wanted: Vec<String> = wanted.map(String::from).to_vec();
    assert_eq!(
        applied_env(&before),
        [(FIELD_MANAGER.to_owned(), wanted.clone())]
    );

    env.apply(&integration("outlook", &app, json!({})));
    let mut op = env.run(&release).await;
    env.wait_condition("outlook", "Ready", ("True", "Ready"), 30)
        .await;
    let own = field_manager(&env.ns, "outlook");
    eventually("the shared manager's fields handed over", 30, || async {
        let d = deployments.get("nocobase").await.unwrap();
        applied_env(&d) == [(own.clone(), wanted.clone())]
    })
    .await;
    let after = deployments.get("nocobase").await.unwrap();
    assert_eq!(env_names(&after), env_names(&before));
    assert_ne!(fingerprint(&after).as_deref(), Some("earlier"));
    assert_eq!(
        after.metadata.generation,
        before.metadata.generation.map(|g| g + 1),
        "one rollout (the new fingerprint), nothing removed and added back on the way"
    );
    assert!(
        op.logs()
            .contains("fields handed over from the shared field manager")
    );

    // nothing of the shared manager holds the entries any more: the release removes them
    env.kube
        .kubectl_ok(&["delete", "mmi", "outlook", "-n", &env.ns, "--timeout=30s"]);
    eventually("the Deployment given back", 30, || async {
        let d = deployments.get("nocobase").await.unwrap();
        env_names(&d) == ["APP_KEY"] && fingerprint(&d).is_none() && applied_env(&d).is_empty()
    })
    .await;
    stop_clean(&env, &mut op, &release, mark, &[OLD]);
    env.cleanup().await;
}

/// A GitOps tool keeping a copy of the operator's fingerprint annotation (a manifest taken
/// from the live Deployment) co-owns it: the operator's next change conflicts with it,
/// which the API server finds (409) and the operator reports as `EnvConflict` naming that
/// manager, without forcing; once the tool drops the annotation, the change goes through.
#[tokio::test]
async fn a_conflict_with_another_field_manager_is_reported_and_never_forced() {
    let _suite = SUITE.read().await;
    let Some(env) = Env::new("conflict").await else {
        return;
    };
    let app = EntraApp::start(OLD, FAR).await;
    let rotated = "Rq4Tz8Kw1Yx5Nb9Mc2Hf6Jd3Lg7Vs0Pe4Ua8SiW";
    app.add_existing(rotated, Some("rotated by hand"), FAR);
    let mark = env.kube.audit().map_or(0, |a| a.mark());
    let release = env.release("conf", &app, &[]);
    let mut op = env.run(&release).await;
    env.apply(&user_secret("entra", OLD));
    env.apply(&nocobase_deployment("nocobase"));
    env.apply(&integration("outlook", &app, json!({})));
    env.wait_condition("outlook", "Ready", ("True", "Ready"), 30)
        .await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let first = fingerprint(&deployments.get("nocobase").await.unwrap()).expect("injected");

    let mut copy = nocobase_deployment("nocobase");
    copy["spec"]["template"]["metadata"]["annotations"] = json!({FINGERPRINT_ANNOTATION: first});
    server_side_apply(&env, "gitops", &copy);
    env.apply(&user_secret("entra", rotated));
    env.wait_condition("outlook", "Injected", ("False", "EnvConflict"), 60)
        .await;
    let (_, message) = env.condition_message("outlook", "Injected").await;
    assert!(message.contains("conflict with \"gitops\""), "{message}");
    let held = deployments.get("nocobase").await.unwrap();
    assert_eq!(
        fingerprint(&held),
        Some(first.clone()),
        "forced over gitops"
    );

    server_side_apply(&env, "gitops", &nocobase_deployment("nocobase"));
    env.wait_condition("outlook", "Injected", ("True", "Injected"), 60)
        .await;
    let changed = fingerprint(&deployments.get("nocobase").await.unwrap());
    assert!(changed.is_some_and(|f| f != first), "the new fingerprint");
    op.stop();
    let refused = forbidden(&env.kube, &release.user(), mark);
    assert!(refused.is_empty(), "requests refused by RBAC: {refused:#?}");
    env.cleanup().await;
}
