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

use common::entra::EntraApp;
use common::operator_process::{OperatorProcess, bin};
use common::real_kube::*;
use common::release::Release;
use common::{CLIENT, TENANT, host_port};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use nocobase_mail_operator::api::MicrosoftMailIntegration;
use serde_json::{Value, json};

const OLD: &str = "Hv3Nq7Zk2Wx9Lp4Tb8Rm1Cd6Jf5Gy0Ss2Qe7UaX";
const FAR: &str = "2028-01-01T00:00:00Z";

/// Shared by the tests of a namespaced release, taken alone by the all-namespace one (whose
/// operator would otherwise act on every other test's integrations too).
static SUITE: RwLock<()> = RwLock::const_new(());

struct Env {
    kube: RealKube,
    client: Client,
    minor: u32,
    dir: tempfile::TempDir,
    /// The integrations' namespace.
    ns: String,
    /// The release's namespace.
    ops: String,
}

impl Env {
    async fn new(tag: &str) -> Option<Self> {
        let kube = RealKube::from_env_or_skip()?;
        let client = kube.client().await;
        install_crd(&client).await;
        let minor = kube.minor(&client).await;
        let ns = namespace(&client, &format!("{tag}-app")).await;
        let ops = namespace(&client, &format!("{tag}-ops")).await;
        Some(Self {
            kube,
            client,
            minor,
            dir: tempfile::tempdir().unwrap(),
            ns,
            ops,
        })
    }

    /// The chart installed watching only the test's namespace, its hosts allowed.
    fn release(&self, name: &str, app: &EntraApp, extra: &[&str]) -> Release {
        let hosts = host_port(&app.uri());
        let watch = format!("watchNamespaces={{{}}}", self.ns);
        let authority = format!("allowedHosts.authority={{{hosts}}}");
        let graph = format!("allowedHosts.graph={{{hosts}}}");
        let mut flags = vec!["--set", &watch, "--set", &authority, "--set", &graph];
        flags.extend(extra);
        Release::install(&self.kube, name, &self.ops, self.minor, &flags)
    }

    async fn run(&self, r: &Release) -> OperatorProcess {
        let log = self.dir.path().join(format!("{}.log", r.name));
        r.run(&self.client, self.dir.path(), &log).await
    }

    /// `kubectl apply -f -` of `doc` in the test's namespace, as a user does.
    fn apply(&self, doc: &Value) {
        let file = self.dir.path().join("apply.json");
        std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
        let f = file.to_str().unwrap();
        // kubectl 1.20 validates on the client against the server's schema, which has no
        // CEL rules: --validate=false as for the chart (the server still prunes and checks).
        self.kube
            .kubectl_ok(&["apply", "-n", &self.ns, "--validate=false", "-f", f]);
    }

    fn mmis(&self) -> Api<MicrosoftMailIntegration> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn mmi(&self, name: &str) -> Value {
        serde_json::to_value(self.mmis().get(name).await.expect("the integration")).unwrap()
    }

    async fn condition(&self, name: &str, t: &str) -> (String, String) {
        let m = self.mmi(name).await;
        let c = m["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t).cloned())
            .unwrap_or_default();
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        (s("status"), s("reason"))
    }

    async fn wait_condition(&self, name: &str, t: &str, want: (&str, &str), secs: u64) {
        let what = format!("{name}: {t} {want:?}");
        eventually(&what, secs, || async {
            self.condition(name, t).await == (want.0.to_owned(), want.1.to_owned())
        })
        .await;
    }

    async fn phase(&self, name: &str) -> (String, String) {
        let r = &self.mmi(name).await["status"]["rotation"];
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
        (s("phase"), s("reason"))
    }

    /// `nocobase-mail-operator ARGS` as a user runs it, with the admin kubeconfig.
    fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(bin())
            .args(args)
            .env("KUBECONFIG", &self.kube.kubeconfig)
            .output()
            .expect("the CLI runs");
        assert!(
            out.status.success(),
            "nocobase-mail-operator {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn cleanup(self) {
        delete_namespace(&self.client, &self.ns).await;
        delete_namespace(&self.client, &self.ops).await;
    }
}

fn user_secret(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {"client-secret": value}})
}

/// A NocoBase-like Deployment with no replicas: the Deployment controller reports each
/// template as rolled out at once (no kubelet here runs pods).
fn nocobase_deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "nocobase", "image": "nocobase/nocobase:2.2.15",
                    "env": [{"name": "APP_KEY", "value": "k"}]}]}}}})
}

fn integration(name: &str, app: &EntraApp, spec: Value) -> Value {
    let mut s = json!({"tenantId": TENANT, "clientId": CLIENT, "clientSecretRef": {"name": "entra"},
        "authorityHost": app.uri(), "graphHost": app.uri(),
        "secretExpiry": {"expiresAt": FAR, "discoverFromGraph": false},
        "targets": [{"deploymentName": "nocobase"}]});
    s.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    json!({"apiVersion": "nocobase-mail-operator.dev/v1alpha1", "kind": "MicrosoftMailIntegration",
        "metadata": {"name": name}, "spec": s})
}

/// Lines of the operator's log at WARN or ERROR.
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

/// Every request of `user` refused with 403 after `mark`, from the audit log.
fn forbidden(kube: &RealKube, user: &str, mark: u64) -> Vec<String> {
    let Some(audit) = kube.audit() else {
        say("no audit log for this cluster: the 403 check reads only the operator's log");
        return Vec::new();
    };
    audit
        .by(user, mark)
        .into_iter()
        .filter(|e| e.code == 403)
        .map(|e| e.to_string())
        .collect()
}

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

    op.stop();
    let log = op.logs();
    assert!(warnings(&log).is_empty(), "warnings:\n{log}");
    let refused = forbidden(&env.kube, &release.user(), mark);
    assert!(refused.is_empty(), "requests refused by RBAC: {refused:#?}");
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
    op.stop();
    let log = op.logs();
    assert!(warnings(&log).is_empty(), "warnings:\n{log}");
    let refused = forbidden(&env.kube, &release.user(), mark);
    assert!(refused.is_empty(), "requests refused by RBAC: {refused:#?}");
    env.cleanup().await;
}
