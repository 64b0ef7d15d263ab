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
