//! A real Kubernetes API server for the tests that need one, envtest-style: the cluster
//! comes from `scripts/real-kube.sh` (`source "$(bash scripts/real-kube.sh env)"`:
//! `KUBE_REAL_KUBECONFIG`, `KUBE_REAL_AUDIT_LOG`, `KUBE_REAL_KUBECTL`, ...), which
//! `scripts/test.sh` starts. Like envtest's `USE_EXISTING_CLUSTER=true`, the same switch
//! points the tests at another cluster (the current context of `KUBECONFIG`); there the
//! audit-log checks are skipped (saying so) unless `KUBE_REAL_AUDIT_LOG` names a readable
//! copy of that cluster's audit log.
//!
//! What it gives a test: a client as the cluster admin, the integration CRD from `crds/`
//! installed (through a plain create where the server predates CEL rules, as 1.20 does), a
//! fresh namespace, the token of a ServiceAccount (the token controller's Secret, as in
//! 1.20) and a kubeconfig holding it, kubectl, and the audit log (who wrote what, and every
//! 403).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use serde_json::{Value, json};

pub const CRD_NAME: &str = "microsoftmailintegrations.nocobase-mail-operator.dev";
pub const CRD_FILE: &str = "crds/microsoftmailintegrations.yaml";
/// The field manager of everything the harness itself writes.
pub const HARNESS_MANAGER: &str = "real-kube-harness";

/// The cluster under test.
#[derive(Clone, Debug)]
pub struct RealKube {
    /// An admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The API server's audit log (JSON lines), when readable.
    pub audit_log: Option<PathBuf>,
    /// kubectl matching the server (Debian's 1.20), else `kubectl` on PATH.
    pub kubectl: PathBuf,
}

fn var(n: &str) -> Option<String> {
    std::env::var(n).ok().filter(|v| !v.is_empty())
}

/// Whether a missing cluster fails the test instead of skipping it: in the test command
/// (`KUBE_REAL_REQUIRED=1`) and under CI.
pub fn required() -> bool {
    var("KUBE_REAL_REQUIRED").is_some_and(|v| v == "1") || var("CI").is_some_and(|v| v != "false")
}

/// Straight to stderr: the test harness hides eprintln! of passing tests.
pub fn say(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

impl RealKube {
    /// The cluster `scripts/real-kube.sh` started, or the current context of `KUBECONFIG`
    /// with `USE_EXISTING_CLUSTER=true`, or `None` (the test skips, saying so). In the
    /// test command (`KUBE_REAL_REQUIRED=1`) or under CI a missing cluster fails instead.
    pub fn from_env_or_skip() -> Option<Self> {
        let existing = var("USE_EXISTING_CLUSTER").is_some_and(|v| v == "true");
        let kubeconfig = var("KUBE_REAL_KUBECONFIG")
            .or_else(|| existing.then(|| var("KUBECONFIG")).flatten())
            .map(PathBuf::from);
        match kubeconfig {
            Some(kubeconfig) => Some(Self {
                kubeconfig,
                audit_log: var("KUBE_REAL_AUDIT_LOG").map(PathBuf::from),
                kubectl: var("KUBE_REAL_KUBECTL")
                    .unwrap_or_else(|| "kubectl".into())
                    .into(),
            }),
            None if required() => panic!(
                "no real Kubernetes API server: KUBE_REAL_KUBECONFIG is not set. \
                 `bash scripts/test.sh` starts one; by hand: `bash scripts/real-kube.sh start` \
                 then `source \"$(bash scripts/real-kube.sh env)\"` (or USE_EXISTING_CLUSTER=true \
                 with KUBECONFIG for a cluster of your own)"
            ),
            None => {
                say(
                    "SKIPPED: no real Kubernetes API server (KUBE_REAL_KUBECONFIG unset); \
                     `bash scripts/test.sh` runs this test against one it starts",
                );
                None
            }
        }
    }

    /// A client as the admin of the kubeconfig.
    pub async fn client(&self) -> Client {
        client_from(&self.kubeconfig).await
    }

    /// kubectl with the admin kubeconfig; panics when it cannot run.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as(&self.kubeconfig, args)
    }

    /// kubectl with another kubeconfig (say, a ServiceAccount's).
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .output()
            .unwrap_or_else(|e| panic!("{} {args:?}: {e}", self.kubectl.display()))
    }

    /// kubectl that must succeed; its standard output.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's minor version (20 for 1.20).
    pub async fn minor(&self, client: &Client) -> u32 {
        let v = client.apiserver_version().await.expect("/version");
        v.minor
            .trim_end_matches('+')
            .parse()
            .expect("a numeric minor version")
    }

    /// A kubeconfig for `token` (a ServiceAccount's), written under `dir`.
    pub fn kubeconfig_for_token(&self, token: &str, namespace: &str, dir: &Path) -> PathBuf {
        let admin: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(&self.kubeconfig).expect("the admin kubeconfig"),
        )
        .expect("the admin kubeconfig is YAML");
        let current = admin["current-context"].as_str().unwrap_or_default();
        let ctx = admin["contexts"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == current))
            .expect("the current context");
        let cluster_name = &ctx["context"]["cluster"];
        let cluster = admin["clusters"]
            .as_array()
            .and_then(|c| c.iter().find(|c| &c["name"] == cluster_name))
            .expect("the current context's cluster");
        let config = json!({"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster["cluster"]}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": namespace}}],
            "current-context": "c"});
        let path = dir.join(format!("kubeconfig-{namespace}"));
        // JSON is YAML: any kubeconfig reader takes it.
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        path
    }

    /// The audit log, when this cluster has a readable one.
    pub fn audit(&self) -> Option<Audit> {
        let path = self.audit_log.clone()?;
        path.exists().then_some(Audit { path })
    }
}

pub async fn client_from(kubeconfig: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("a readable kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client")
}

/// Polls `f` every 200 ms until it holds, for at most `secs` seconds.
pub async fn eventually<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if f().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------- the CRD

/// Whether an error is the refusal of a server that predates CEL rules (before 1.25):
/// server-side apply builds a typed object from the server's own CRD schema, which has no
/// `x-kubernetes-validations`.
pub fn is_unknown_cel_field(e: &kube::Error) -> bool {
    e.to_string().contains("x-kubernetes-validations")
}

/// Installs (or updates) the CRD from `crds/` and waits until it is established: through
/// server-side apply, or, on a server that refuses the CEL rules, through a plain create
/// or replace (which stores the schema without them: the operator's own checks then
/// report the same reasons in status).
pub async fn install_crd(client: &Client) {
    // once per test process: the tests of one binary run in parallel
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED.get_or_init(|| install_crd_now(client)).await;
}

async fn install_crd_now(client: &Client) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(CRD_FILE))
        .expect("the CRD file");
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("the CRD is YAML");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply(HARNESS_MANAGER).force();
    match crds.patch(CRD_NAME, &pp, &Patch::Apply(&crd)).await {
        Ok(_) => {}
        Err(e) if is_unknown_cel_field(&e) => plain_install(&crds, crd).await,
        Err(e) => panic!("installing the CRD: {e}"),
    }
    eventually("the CRD to be established", 30, || async {
        crds.get(CRD_NAME)
            .await
            .ok()
            .and_then(|c| c.status?.conditions)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    })
    .await;
}

async fn plain_install(crds: &Api<CustomResourceDefinition>, mut crd: CustomResourceDefinition) {
    match crds.get_opt(CRD_NAME).await.expect("reading the CRD") {
        None => match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            // another test binary created it meanwhile
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating the CRD: {e}"),
        },
        Some(mut existing) => {
            // another test binary may replace it at the same time: retry on conflict
            for _ in 0..10 {
                crd.metadata.resource_version = existing.metadata.resource_version.take();
                match crds.replace(CRD_NAME, &PostParams::default(), &crd).await {
                    Ok(_) => return,
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        existing = crds.get(CRD_NAME).await.expect("reading the CRD");
                    }
                    Err(e) => panic!("replacing the CRD: {e}"),
                }
            }
            panic!("replacing the CRD: 10 conflicts in a row");
        }
    }
}

// ---------------------------------------------------------------- namespaces, tokens

/// A namespace of the test's own: `prefix-<pid>-<n>`.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// Deletes a namespace (the namespace controller empties it; not waited for).
pub async fn delete_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(name, &DeleteParams::default()).await;
}

/// The token of ServiceAccount `sa` in `ns`, from the Secret the token controller creates
/// for it (Kubernetes before 1.24), created by the harness on later servers.
pub async fn service_account_token(client: &Client, ns: &str, sa: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let mut token = None;
    for _ in 0..150 {
        let listed = secrets
            .list(&Default::default())
            .await
            .expect("listing Secrets");
        token = listed.items.into_iter().find_map(|s| {
            let ann = s.metadata.annotations.unwrap_or_default();
            let ours = s.type_.as_deref() == Some("kubernetes.io/service-account-token")
                && ann
                    .get("kubernetes.io/service-account.name")
                    .map(String::as_str)
                    == Some(sa);
            let t = s.data?.get("token")?.0.clone();
            (ours && !t.is_empty()).then_some(t)
        });
        if token.is_some() {
            break;
        }
        if sas
            .get_opt(sa)
            .await
            .expect("reading the ServiceAccount")
            .is_some()
        {
            ensure_token_secret(&secrets, sa).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let token = token.unwrap_or_else(|| panic!("no token Secret for ServiceAccount {ns}/{sa}"));
    String::from_utf8(token).expect("a UTF-8 token")
}

/// From 1.24 on, nothing makes token Secrets unasked: ask for one (the token controller
/// fills it in). On 1.20 the controller has made one already, or soon will.
async fn ensure_token_secret(secrets: &Api<Secret>, sa: &str) {
    let name = format!("{sa}-harness-token");
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": name,
        "annotations": {"kubernetes.io/service-account.name": sa}},
        "type": "kubernetes.io/service-account-token"}))
    .unwrap();
    let _ = secrets.create(&PostParams::default(), &s).await;
}

/// A Secret's data as text, base64 decoded.
pub fn secret_text(s: &Secret, key: &str) -> Option<String> {
    let b = s.data.as_ref()?.get(key)?;
    String::from_utf8(b.0.clone()).ok()
}

pub fn b64(v: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

// ---------------------------------------------------------------- the audit log

/// The API server's audit log (level Metadata: one JSON line per request and stage).
#[derive(Clone, Debug)]
pub struct Audit {
    pub path: PathBuf,
}

/// One finished request of the audit log.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub user: String,
    pub verb: String,
    pub uri: String,
    pub code: u16,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl AuditEvent {
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

impl std::fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} -> {} ({})",
            self.user, self.verb, self.uri, self.code, self.resource
        )
    }
}

impl Audit {
    /// Where the log ends now: events after this mark are the ones that follow.
    pub fn mark(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// The finished requests logged after `mark`.
    pub fn since(&self, mark: u64) -> Vec<AuditEvent> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&self.path).expect("the audit log");
        f.seek(SeekFrom::Start(mark)).unwrap();
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["stage"] == "ResponseComplete" || e["stage"] == "Panic")
            .map(|e| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                AuditEvent {
                    user: s(&e["user"]["username"]),
                    verb: s(&e["verb"]),
                    uri: s(&e["requestURI"]),
                    code: e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
                    resource: s(&e["objectRef"]["resource"]),
                    subresource: s(&e["objectRef"]["subresource"]),
                    namespace: s(&e["objectRef"]["namespace"]),
                    name: s(&e["objectRef"]["name"]),
                }
            })
            .collect()
    }

    /// The requests of `user` after `mark`.
    pub fn by(&self, user: &str, mark: u64) -> Vec<AuditEvent> {
        self.since(mark)
            .into_iter()
            .filter(|e| e.user == user)
            .collect()
    }
}

/// The audit user name of ServiceAccount `sa` in `ns`.
pub fn sa_user(ns: &str, sa: &str) -> String {
    format!("system:serviceaccount:{ns}:{sa}")
}
