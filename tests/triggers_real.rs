//! Every input a user can change is acted on within seconds, through the controller as
//! `run` starts it (issue 20 item 3): the release binary under the chart's ServiceAccount
//! on the real control plane of `scripts/real-kube.sh`, changes made with kubectl as a user
//! makes them, and what the user then reads (`kubectl get mmi`'s conditions, the
//! Deployment, `/metrics`).
//!
//! Each change is made while the integration is settled, with its next periodic reconcile
//! hours away (`validation.interval` 6h), so only the watch (or, for NocoBase's answer, the
//! documented retry) can explain a reaction within seconds: a trigger the watch dropped
//! fails here. The two annotations the operator reads (`rotate-requested-at`,
//! `retire-approved-at`) are shown the same way, through `rotate`, in tests/kube_real.rs.
//!
//! Skips, saying so, without a cluster, unless `KUBE_REAL_REQUIRED=1`.

mod common;

use common::SECRET_ID;
use common::cluster::*;
use common::entra::EntraApp;
use common::nocobase_emu::{API_KEY, NocoBase};
use common::operator_process::OperatorProcess;
use common::real_kube::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::{Value, json};

/// How long a watched change may take to show: generous, as these machines are shared.
const SOON: u64 = 20;

/// `kubectl patch mmi NAME --type merge -p PATCH`, as a user edits an integration.
fn patch_mmi(env: &Env, name: &str, patch: &Value) {
    env.kube.kubectl_ok(&[
        "patch",
        "mmi",
        name,
        "-n",
        &env.ns,
        "--type",
        "merge",
        "-p",
        &patch.to_string(),
    ]);
}

/// The names of the env entries of the Deployment's first container.
async fn env_names(env: &Env, name: &str) -> Option<Vec<String>> {
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let d = deployments.get_opt(name).await.unwrap()?;
    let c = d.spec?.template.spec?.containers.into_iter().next()?;
    Some(
        c.env
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.name)
            .collect(),
    )
}

async fn injected(env: &Env) -> bool {
    env_names(env, "nocobase")
        .await
        .is_some_and(|n| n.iter().any(|n| n == "MICROSOFT_CLIENT_SECRET"))
}

/// The spec: a changed expiry opens the warning window, and closing it again ends it.
async fn spec_changes(env: &Env) {
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48)).to_string();
    for (at, reason) in [(soon.as_str(), "ExpiresWithin7Days"), (FAR, "Ready")] {
        let expiry = json!({"spec": {"secretExpiry": {"expiresAt": at}}});
        patch_mmi(env, "outlook", &expiry);
        env.wait_condition("outlook", "Ready", ("True", reason), SOON)
            .await;
    }
}

/// The Secret: its value replaced by the Secret ID, put back, deleted, created again.
async fn secret_changes(env: &Env) {
    env.apply(&user_secret("entra", SECRET_ID));
    env.wait_condition(
        "outlook",
        "CredentialsValid",
        ("False", "SecretIdInsteadOfValue"),
        SOON,
    )
    .await;
    env.apply(&user_secret("entra", OLD));
    env.wait_condition("outlook", "Ready", ("True", "Ready"), SOON)
        .await;
    env.kube
        .kubectl_ok(&["delete", "secret", "entra", "-n", &env.ns]);
    env.wait_condition("outlook", "Ready", ("False", "SecretNotFound"), SOON)
        .await;
    env.apply(&user_secret("entra", OLD));
    env.wait_condition("outlook", "Ready", ("True", "Ready"), SOON)
        .await;
}

/// A target Deployment: deleted (as a reinstall of NocoBase does) and created again without
/// the credentials, which come back.
async fn deployment_changes(env: &Env) {
    env.kube
        .kubectl_ok(&["delete", "deployment", "nocobase", "-n", &env.ns]);
    env.wait_condition("outlook", "Injected", ("False", "TargetNotFound"), SOON)
        .await;
    env.apply(&nocobase_deployment("nocobase"));
    eventually("the recreated Deployment injected again", SOON, || async {
        injected(env).await
    })
    .await;
    env.wait_condition("outlook", "Ready", ("True", "Ready"), SOON)
        .await;
}

/// The integration's labels: its series follow the owner label (`metrics.integrationLabels`).
async fn label_changes(env: &Env, op: &OperatorProcess) {
    let series = |team: &str| {
        format!(
            "nocobase_mail_credentials_valid{{namespace=\"{}\",name=\"outlook\",team=\"{team}\"}} 1",
            env.ns
        )
    };
    for team in ["mail", "billing"] {
        env.kube.kubectl_ok(&[
            "label",
            "mmi",
            "outlook",
            "-n",
            &env.ns,
            &format!("team={team}"),
            "--overwrite",
        ]);
        let want = series(team);
        eventually(
            &format!("the series labelled team={team}"),
            SOON,
            || async {
                op.get("/metrics")
                    .await
                    .is_some_and(|m| m.lines().any(|l| l == want))
            },
        )
        .await;
    }
}

#[tokio::test]
async fn spec_secret_deployment_and_label_changes_are_acted_on_within_seconds() {
    let Some(env) = Env::new("trig").await else {
        return;
    };
    let app = EntraApp::start(OLD, FAR).await;
    let mark = env.kube.audit().map_or(0, |a| a.mark());
    let labels = ["--set", "metrics.integrationLabels={team}"];
    let release = env.release("trig", &app, &labels);
    let mut op = env.run(&release).await;

    env.apply(&user_secret("entra", OLD));
    env.apply(&nocobase_deployment("nocobase"));
    env.apply(&integration("outlook", &app, json!({})));
    env.wait_condition("outlook", "Ready", ("True", "Ready"), 60)
        .await;
    assert!(injected(&env).await);

    spec_changes(&env).await;
    secret_changes(&env).await;
    deployment_changes(&env).await;
    label_changes(&env, &op).await;

    stop_clean(&env, &mut op, &release, mark, &[OLD]);
    env.cleanup().await;
}

/// NocoBase's answer is not watched (NocoBase has no watch API): a reload answered with
/// `503 APP_COMMANDING` is retried on the documented schedule, so the sync completes within
/// seconds of NocoBase answering again, without any change in the cluster.
#[tokio::test]
async fn nocobase_answering_again_is_acted_on_within_seconds() {
    let Some(env) = Env::new("trignb").await else {
        return;
    };
    let app = EntraApp::start(OLD, FAR).await;
    let mark = env.kube.audit().map_or(0, |a| a.mark());
    let nb = NocoBase::with_collections([]);
    // NocoBase reloading from the start: every request answers 503 APP_COMMANDING
    nb.state.lock().unwrap().restarting_for = usize::MAX;
    // The NocoBase emulator is also the forward proxy (HTTP_PROXY) that the operator sends
    // http:// requests through, so the default allow-list (a Service of the integration's
    // own namespace) is what lets the request out.
    let proxy = nb.serve().await;
    let release = env.release("trignb", &app, &[]);
    let proxy_env = [
        ("HTTP_PROXY", proxy.uri()),
        ("NO_PROXY", "127.0.0.1,localhost".to_owned()),
    ];
    let proxy_env: Vec<(&str, &str)> = proxy_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut op = env.run_with(&release, &proxy_env).await;

    env.apply(&user_secret("entra", OLD));
    env.apply(&json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "nocobase-api-key"}, "stringData": {"api-key": API_KEY}}));
    let url = format!("http://nocobase.{}.svc:13000", env.ns);
    env.apply(&integration(
        "outlook",
        &app,
        json!({"targets": [], "nocobase": {"url": url, "apiKeySecretRef": {"name": "nocobase-api-key"}}}),
    ));
    env.wait_condition("outlook", "CredentialsValid", ("True", "Valid"), 60)
        .await;
    eventually("the sync waiting for NocoBase", SOON, || async {
        env.condition("outlook", "NocoBaseSynced").await.0 != "True"
            && !proxy
                .received_requests()
                .await
                .unwrap_or_default()
                .is_empty()
    })
    .await;

    nb.state.lock().unwrap().restarting_for = 0;
    env.wait_condition("outlook", "NocoBaseSynced", ("True", "Synced"), SOON)
        .await;
    env.wait_condition("outlook", "Ready", ("True", "Ready"), SOON)
        .await;
    let vars = nb
        .state
        .lock()
        .unwrap()
        .vars
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    assert!(
        vars.iter().any(|v| v == "MICROSOFT_CLIENT_SECRET"),
        "variables written: {vars:?}"
    );

    stop_clean(&env, &mut op, &release, mark, &[OLD, API_KEY]);
    env.cleanup().await;
}
