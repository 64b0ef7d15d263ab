//! A cluster administrator's day with the operator, on the real control plane of
//! `scripts/real-kube.sh` (issue 20 item 2): the chart installed, upgraded and uninstalled
//! with the real helm, the release binary under the chart's ServiceAccount, everything
//! else done with kubectl as a user does. Two integrations aim at one Deployment (the
//! second is refused with `EnvConflict` and takes over when the first is deleted), a
//! GitOps tool applies the Deployment with its own field manager and drops a container, a
//! rejected secret never reaches the Deployment, a restart writes nothing (read from the
//! API server's audit log), `kubectl get` and `kubectl describe` show what happened, and
//! deleting the namespace completes.
//!
//! Skips, saying so, without a cluster, unless `KUBE_REAL_REQUIRED=1`.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::entra::EntraApp;
use common::real_kube::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::{Value, json};

/// The second integration's secret, a second credential of the same app registration.
const SECOND: &str = "Pq5Wm8Rt2Yx6Kb9Nc3Hd7Jf1Gs4Lv0Zs8Ue2OiQ";
const REJECTED: &str = "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp9Oo8NnM";

/// The Deployment as a GitOps tool keeps it: applied server-side with its own manager.
fn gitops_deployment(containers: &[&str]) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({"name": c, "image": "nocobase/nocobase:2.2.15",
                "env": [{"name": "APP_KEY", "value": "k"}]})
        })
        .collect();
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nocobase"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "nocobase"}},
            "template": {"metadata": {"labels": {"app": "nocobase"}},
                "spec": {"containers": containers}}}})
}

fn gitops_apply(env: &Env, doc: &Value) -> std::process::Output {
    let file = env.dir.path().join("gitops.yaml");
    std::fs::write(&file, serde_json::to_string(doc).unwrap()).unwrap();
    let f = file.to_str().unwrap();
    env.kube.kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=gitops",
        "-n",
        &env.ns,
        "-f",
        f,
    ])
}

/// Env names per container of the Deployment.
async fn env_of(env: &Env) -> Vec<(String, Vec<String>)> {
    let deps: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let d = serde_json::to_value(deps.get("nocobase").await.unwrap()).unwrap();
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    containers
        .iter()
        .map(|c| {
            let names = c["env"].as_array().cloned().unwrap_or_default();
            let names = names.iter().map(|e| e["name"].as_str().unwrap().to_owned());
            (c["name"].as_str().unwrap().to_owned(), names.collect())
        })
        .collect()
}

fn second_integration(app: &EntraApp) -> Value {
    let mut m = integration(
        "second",
        app,
        json!({"targets": [{"deploymentName": "nocobase", "env": {
            "clientId": "SECOND_CLIENT_ID", "clientSecret": "SECOND_CLIENT_SECRET",
            "tenantId": "SECOND_TENANT_ID"}}]}),
    );
    m["spec"]["clientSecretRef"] = json!({"name": "entra-second"});
    m
}

const OUTLOOK_ENV: [&str; 3] = [
    "MICROSOFT_CLIENT_ID",
    "MICROSOFT_CLIENT_SECRET",
    "MICROSOFT_TENANT_ID",
];

fn has_all(names: &[String], wanted: &[&str]) -> bool {
    wanted.iter().all(|w| names.iter().any(|n| n == w))
}

fn has_any(names: &[String], wanted: &[&str]) -> bool {
    wanted.iter().any(|w| names.iter().any(|n| n == w))
}

/// The first integration deleted and the second's secret fixed: the second takes the
/// Deployment over, the first's entries are gone, the user's stay.
async fn second_takes_over(env: &Env) {
    env.kube
        .kubectl_ok(&["delete", "mmi", "outlook", "-n", &env.ns, "--timeout=30s"]);
    env.apply(&user_secret("entra-second", SECOND));
    env.wait_condition("second", "Ready", ("True", "Ready"), 60)
        .await;
    let second_env = [
        "SECOND_CLIENT_ID",
        "SECOND_CLIENT_SECRET",
        "SECOND_TENANT_ID",
    ];
    eventually("the second injected, the first released", 30, || async {
        let e = env_of(env).await;
        e.len() == 1
            && has_all(&e[0].1, &second_env)
            && has_all(&e[0].1, &["APP_KEY"])
            && !has_any(&e[0].1, &OUTLOOK_ENV)
    })
    .await;
}

#[tokio::test]
async fn an_administrators_day_from_helm_install_to_namespace_deletion() {
    let Some(env) = Env::new("journey").await else {
        return;
    };
    let app = EntraApp::start(OLD, FAR).await;
    app.add_existing(SECOND, Some("second"), FAR);
    let audit = env.kube.audit();
    let mark = audit.as_ref().map_or(0, |a| a.mark());
    let release = env.release("day", &app, &[]);
    let mut op = env.run(&release).await;

    env.apply(&user_secret("entra", OLD));
    env.apply(&user_secret("entra-second", SECOND));
    let applied = gitops_apply(&env, &gitops_deployment(&["nocobase", "sidecar"]));
    assert!(applied.status.success(), "{applied:?}");
    env.apply(&integration("outlook", &app, json!({})));
    env.apply(&second_integration(&app));
    env.wait_condition("outlook", "Ready", ("True", "Ready"), 60)
        .await;
    // one integration per Deployment: the second is refused in words, nothing of it lands
    env.wait_condition("second", "Injected", ("False", "EnvConflict"), 60)
        .await;
    let (_, message) = env.condition_message("second", "Injected").await;
    assert!(
        message.contains("outlook-microsoft-credentials"),
        "{message}"
    );
    let second_env = [
        "SECOND_CLIENT_ID",
        "SECOND_CLIENT_SECRET",
        "SECOND_TENANT_ID",
    ];
    eventually("the first injected into both containers", 30, || async {
        let e = env_of(&env).await;
        e.len() == 2
            && e.iter().all(|(_, n)| {
                has_all(n, &OUTLOOK_ENV) && has_all(n, &["APP_KEY"]) && !has_any(n, &second_env)
            })
    })
    .await;

    // what an administrator looks at
    let table = env.kube.kubectl_ok(&["get", "mmi", "-n", &env.ns]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "VALID", "REASON", "EXPIRES", "AGE"]
    );
    let row = |name: &str| -> Vec<String> {
        let line = table.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace()
            .skip(1)
            .take(3)
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row("outlook"), ["True", "True", "Ready"], "{table}");
    assert_eq!(row("second"), ["False", "True", "EnvConflict"], "{table}");
    let described = env
        .kube
        .kubectl_ok(&["describe", "mmi", "second", "-n", &env.ns]);
    for want in ["Conditions:", "CredentialsValid", "EnvConflict", "Events:"] {
        assert!(described.contains(want), "no {want} in:\n{described}");
    }

    // the GitOps tool drops the sidecar: refused by the API server while the operator
    // co-owns the container (what the README says), accepted once the target names the
    // container it wants
    let dropped = gitops_apply(&env, &gitops_deployment(&["nocobase"]));
    let err = String::from_utf8_lossy(&dropped.stderr);
    assert!(
        !dropped.status.success() && err.contains("containers[1].image: Required value"),
        "{dropped:?}"
    );
    let mut outlook = integration("outlook", &app, json!({}));
    outlook["spec"]["targets"][0]["containers"] = json!(["nocobase"]);
    env.apply(&outlook);
    eventually("the sidecar released", 30, || async {
        let e = env_of(&env).await;
        e.len() == 2 && !has_any(&e[1].1, &OUTLOOK_ENV) && has_all(&e[0].1, &OUTLOOK_ENV)
    })
    .await;
    let dropped = gitops_apply(&env, &gitops_deployment(&["nocobase"]));
    assert!(dropped.status.success(), "{dropped:?}");
    eventually("the dropped container gone, injection kept", 30, || async {
        let e = env_of(&env).await;
        e.len() == 1
            && e[0].0 == "nocobase"
            && has_all(&e[0].1, &OUTLOOK_ENV)
            && has_all(&e[0].1, &["APP_KEY"])
    })
    .await;

    // a rejected secret stays out of the Deployment and out of the managed Secret
    env.apply(&user_secret("entra-second", REJECTED));
    env.wait_condition("second", "CredentialsValid", ("False", "InvalidSecret"), 30)
        .await;
    let managed: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    if let Some(m) = managed
        .get_opt("second-microsoft-credentials")
        .await
        .unwrap()
    {
        let value = secret_text(&m, "client-secret");
        assert_ne!(
            value.as_deref(),
            Some(REJECTED),
            "the rejected value was delivered"
        );
    }
    assert_eq!(env.condition("outlook", "Ready").await.0, "True");

    restart_writes_nothing(&env, &release, &mut op, audit.as_ref()).await;
    let mut op = upgrade_and_rerun(&env, &release, op).await;
    second_takes_over(&env).await;

    // deleting the namespace completes although its Roles go first: the operator reads
    // the namespace (cluster-wide), sees it terminating, and removes its finalizer
    let log = op.logs();
    let refused_before = forbidden(&env.kube, &release.user(), mark);
    assert!(
        refused_before.is_empty(),
        "requests refused by RBAC: {refused_before:#?}"
    );
    let deletion = audit.as_ref().map_or(0, |a| a.mark());
    env.kube
        .kubectl_ok(&["delete", "namespace", &env.ns, "--wait=false"]);
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    eventually("the namespace deleted", 90, || async {
        namespaces.get_opt(&env.ns).await.unwrap().is_none()
    })
    .await;
    op.stop();
    let log = format!("{log}{}", op.logs());
    assert!(warnings(&log).is_empty(), "warnings:\n{log}");
    // refused since: only requests into the namespace being deleted, whose Roles are gone
    let into = format!("/namespaces/{}/", env.ns);
    let refused = forbidden(&env.kube, &release.user(), deletion);
    assert!(
        refused.iter().all(|r| r.contains(&into)),
        "requests refused by RBAC: {refused:#?}"
    );
    uninstall_leaves_crd_and_integrations_alone(&env, &release).await;
    env.cleanup().await;
}

/// Stops and starts the operator: with nothing changed, the new process writes nothing
/// but its Lease (the audit log says so).
async fn restart_writes_nothing(
    env: &Env,
    release: &common::release::Release,
    op: &mut common::operator_process::OperatorProcess,
    audit: Option<&Audit>,
) {
    // let the last reconciles settle before the mark
    tokio::time::sleep(Duration::from_secs(3)).await;
    op.stop();
    let mark = audit.map_or(0, |a| a.mark());
    let mut again = env.run(release).await;
    env.wait_condition("outlook", "Ready", ("True", "Ready"), 30)
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    again.stop();
    if let Some(a) = audit {
        let writes: Vec<String> = a
            .by(&release.user(), mark)
            .into_iter()
            .filter(|e| e.is_write() && e.resource != "leases")
            .map(|e| e.to_string())
            .collect();
        assert!(writes.is_empty(), "a restart wrote: {writes:#?}");
    }
    // the second integration is still reported rejected by the restarted operator
    assert_eq!(
        env.condition("second", "CredentialsValid").await.1,
        "InvalidSecret"
    );
}

/// `helm upgrade` with a changed value, and the operator started again from the
/// upgraded release's arguments: the integrations stay Ready.
async fn upgrade_and_rerun(
    env: &Env,
    release: &common::release::Release,
    mut op: common::operator_process::OperatorProcess,
) -> common::operator_process::OperatorProcess {
    op.stop();
    release.upgrade(env.minor, &["--reuse-values", "--set", "logLevel=debug"]);
    let op = env.run(release).await;
    assert!(op.logs().contains("DEBUG") || op.logs().contains("\"level\":\"DEBUG\""));
    env.wait_condition("outlook", "Ready", ("True", "Ready"), 30)
        .await;
    op
}

/// `helm uninstall` removes the release's objects; the CRD (from the chart's crds/) and
/// the fingerprint key the operator created stay, as Helm documents for crds/.
async fn uninstall_leaves_crd_and_integrations_alone(
    env: &Env,
    release: &common::release::Release,
) {
    let out = release.uninstall();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crd = env.kube.kubectl(&[
        "get",
        "crd",
        "microsoftmailintegrations.nocobase-mail-operator.dev",
    ]);
    assert!(crd.status.success(), "the CRD was removed by uninstall");
    let sa = env
        .kube
        .kubectl(&["get", "serviceaccount", &release.fullname(), "-n", &env.ops]);
    assert!(
        !sa.status.success(),
        "the ServiceAccount outlived the release"
    );
    let key = env.kube.kubectl(&[
        "get",
        "secret",
        "nocobase-mail-operator-fingerprint-key",
        "-n",
        &env.ops,
    ]);
    assert!(key.status.success(), "the fingerprint key was removed");
}
