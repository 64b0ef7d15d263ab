//! The test cluster of the real-cluster suites: a real control plane
//! ([`super::real_kube`]), namespaces of a test's own, the chart installed with the real
//! helm ([`super::release`]), the operator binary run under the release's ServiceAccount,
//! and what a user applies and reads with kubectl.
#![allow(dead_code)]

use super::entra::EntraApp;
use super::operator_process::{OperatorProcess, bin};
use super::real_kube::*;
use super::release::Release;
use super::{CLIENT, TENANT, host_port};
use kube::Client;
use kube::api::Api;
use nocobase_mail_operator::api::MicrosoftMailIntegration;
use serde_json::{Value, json};

pub const OLD: &str = "Hv3Nq7Zk2Wx9Lp4Tb8Rm1Cd6Jf5Gy0Ss2Qe7UaX";
pub const FAR: &str = "2028-01-01T00:00:00Z";

pub struct Env {
    pub kube: RealKube,
    pub client: Client,
    pub minor: u32,
    pub dir: tempfile::TempDir,
    /// The integrations' namespace.
    pub ns: String,
    /// The release's namespace.
    pub ops: String,
}

impl Env {
    pub async fn new(tag: &str) -> Option<Self> {
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
    pub fn release(&self, name: &str, app: &EntraApp, extra: &[&str]) -> Release {
        self.release_for(name, &app.uri(), extra)
    }

    /// [`Self::release`] allowing the Microsoft emulator at `microsoft` (a URL).
    pub fn release_for(&self, name: &str, microsoft: &str, extra: &[&str]) -> Release {
        let hosts = host_port(microsoft);
        let watch = format!("watchNamespaces={{{}}}", self.ns);
        let authority = format!("allowedHosts.authority={{{hosts}}}");
        let graph = format!("allowedHosts.graph={{{hosts}}}");
        let mut flags = vec!["--set", &watch, "--set", &authority, "--set", &graph];
        flags.extend(extra);
        // the cluster-wide objects of a namespaced release, left by an earlier run of the
        // same test that stopped half-way, would make helm refuse to install
        let stale = format!("{name}-nocobase-mail-operator-namespace-deletion");
        self.kube.kubectl_ok(&[
            "delete",
            "clusterrole,clusterrolebinding",
            &stale,
            "--ignore-not-found",
        ]);
        Release::install(&self.kube, name, &self.ops, self.minor, &flags)
    }

    pub async fn run(&self, r: &Release) -> OperatorProcess {
        self.run_with(r, &[]).await
    }

    /// [`Self::run`] with extra environment variables.
    pub async fn run_with(&self, r: &Release, env: &[(&str, &str)]) -> OperatorProcess {
        let log = self.dir.path().join(format!("{}.log", r.name));
        r.run_with(&self.client, self.dir.path(), &log, env).await
    }

    /// `kubectl apply -f -` of `doc` in the test's namespace, as a user does.
    pub fn apply(&self, doc: &Value) {
        let file = self.dir.path().join("apply.json");
        std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
        let f = file.to_str().unwrap();
        // kubectl 1.20 validates on the client against the server's schema, which has no
        // CEL rules: --validate=false as for the chart (the server still prunes and checks).
        self.kube
            .kubectl_ok(&["apply", "-n", &self.ns, "--validate=false", "-f", f]);
    }

    pub fn mmis(&self) -> Api<MicrosoftMailIntegration> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn mmi(&self, name: &str) -> Value {
        serde_json::to_value(self.mmis().get(name).await.expect("the integration")).unwrap()
    }

    /// Condition `t` of integration `name` (`null` when absent).
    async fn condition_of(&self, name: &str, t: &str) -> Value {
        let m = self.mmi(name).await;
        m["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t).cloned())
            .unwrap_or_default()
    }

    /// (status, reason) of condition `t`.
    pub async fn condition(&self, name: &str, t: &str) -> (String, String) {
        let c = self.condition_of(name, t).await;
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        (s("status"), s("reason"))
    }

    /// (reason, message) of condition `t`.
    pub async fn condition_message(&self, name: &str, t: &str) -> (String, String) {
        let c = self.condition_of(name, t).await;
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        (s("reason"), s("message"))
    }

    pub async fn wait_condition(&self, name: &str, t: &str, want: (&str, &str), secs: u64) {
        let what = format!("{name}: {t} {want:?}");
        eventually(&what, secs, || async {
            self.condition(name, t).await == (want.0.to_owned(), want.1.to_owned())
        })
        .await;
    }

    pub async fn phase(&self, name: &str) -> (String, String) {
        let r = &self.mmi(name).await["status"]["rotation"];
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
        (s("phase"), s("reason"))
    }

    /// `nocobase-mail-operator ARGS` as a user runs it, with the admin kubeconfig.
    pub fn cli(&self, args: &[&str]) -> String {
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

    pub async fn cleanup(self) {
        delete_namespace(&self.client, &self.ns).await;
        delete_namespace(&self.client, &self.ops).await;
    }
}

pub fn user_secret(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {"client-secret": value}})
}

/// A NocoBase-like Deployment with no replicas: the Deployment controller reports each
/// template as rolled out at once (no kubelet here runs pods).
pub fn nocobase_deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "nocobase", "image": "nocobase/nocobase:2.2.15",
                    "env": [{"name": "APP_KEY", "value": "k"}]}]}}}})
}

pub fn integration(name: &str, app: &EntraApp, spec: Value) -> Value {
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
pub fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

/// Stops the operator and checks what every real-cluster test expects of a run: no WARN or
/// ERROR in its log, none of `secrets` in it, no request of the release refused by RBAC
/// since the audit `mark`.
pub fn stop_clean(
    env: &Env,
    op: &mut OperatorProcess,
    release: &Release,
    mark: u64,
    secrets: &[&str],
) {
    op.stop();
    let log = op.logs();
    assert!(warnings(&log).is_empty(), "warnings:\n{log}");
    super::assert_no_secret(&log, secrets);
    let refused = forbidden(&env.kube, &release.user(), mark);
    assert!(refused.is_empty(), "requests refused by RBAC: {refused:#?}");
}

/// Every request of `user` refused with 403 after `mark`, from the audit log.
pub fn forbidden(kube: &RealKube, user: &str, mark: u64) -> Vec<String> {
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
