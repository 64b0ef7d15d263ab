//! The chart installed with the real `helm` on the real cluster, and the operator binary
//! run as that release would run it: the Deployment's own arguments, under the chart's
//! ServiceAccount token (so a rule missing from the chart's RBAC fails), on loopback.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::Api;

use super::operator_process::OperatorProcess;
use super::real_kube::{RealKube, sa_user, service_account_token};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub const CHART: &str = "charts/nocobase-mail-operator";

/// `helm`: `$HELM`, else on PATH, else the one `scripts/fetch-helm.sh` fetches.
pub fn helm_path() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Some(helm) = std::env::var_os("HELM").filter(|h| !h.is_empty()) {
            return helm.into();
        }
        let on_path = Command::new("helm")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if on_path {
            return "helm".into();
        }
        let out = Command::new("bash")
            .arg("scripts/fetch-helm.sh")
            .current_dir(ROOT)
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs scripts/fetch-helm.sh");
        assert!(
            out.status.success(),
            "scripts/fetch-helm.sh failed; install helm 3+ or set HELM"
        );
        PathBuf::from(String::from_utf8(out.stdout).expect("a UTF-8 path").trim())
    })
}

/// helm with its own state in a scratch directory, against `kubeconfig` (none: offline).
pub fn helm(kubeconfig: Option<&Path>, args: &[&str]) -> Output {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    let mut cmd = Command::new(helm_path());
    cmd.args(args)
        .current_dir(ROOT)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    if let Some(k) = kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    cmd.output().expect("helm runs")
}

/// The flags the README gives for servers before 1.25 (no CEL rules): helm 4 installs
/// CRDs with server-side apply, which such a server refuses for the CRD's
/// `x-kubernetes-validations`, and helm validates manifests against the server's OpenAPI
/// schema, which lacks that field too.
pub const PRE_CEL_FLAGS: [&str; 2] = ["--server-side=false", "--disable-openapi-validation"];

/// A release of the chart in a namespace of its own.
pub struct Release {
    pub name: String,
    pub namespace: String,
    pub kube: RealKube,
}

impl Release {
    /// `helm install NAME CHART -n NS --create-namespace` with `extra` flags (the pre-CEL
    /// flags on servers before 1.25); panics with helm's output when it fails.
    pub fn install(
        kube: &RealKube,
        name: &str,
        namespace: &str,
        minor: u32,
        extra: &[&str],
    ) -> Self {
        let r = Self {
            name: name.into(),
            namespace: namespace.into(),
            kube: kube.clone(),
        };
        r.helm_ok("install", minor, extra);
        r
    }

    fn helm_ok(&self, verb: &str, minor: u32, extra: &[&str]) -> String {
        let mut args = vec![
            verb,
            &self.name,
            CHART,
            "-n",
            &self.namespace,
            "--create-namespace",
        ];
        if verb == "upgrade" {
            args.retain(|a| *a != "--create-namespace");
        }
        if minor < 25 {
            args.extend(PRE_CEL_FLAGS);
        }
        args.extend(extra);
        let out = helm(Some(&self.kube.kubeconfig), &args);
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `helm upgrade` with `extra` flags.
    pub fn upgrade(&self, minor: u32, extra: &[&str]) -> String {
        self.helm_ok("upgrade", minor, extra)
    }

    /// `helm uninstall`; its output.
    pub fn uninstall(&self) -> Output {
        helm(
            Some(&self.kube.kubeconfig),
            &["uninstall", &self.name, "-n", &self.namespace],
        )
    }

    /// The chart's full name (of its Deployment, ServiceAccount, roles).
    pub fn fullname(&self) -> String {
        if self.name.contains("nocobase-mail-operator") {
            self.name.clone()
        } else {
            format!("{}-nocobase-mail-operator", self.name)
        }
    }

    /// The audit user of the release's ServiceAccount.
    pub fn user(&self) -> String {
        sa_user(&self.namespace, &self.fullname())
    }

    /// Runs the operator binary as the release's pod would: the Deployment's arguments
    /// (`$(POD_NAMESPACE)` filled in, `--listen` moved to loopback), its RUST_LOG, and the
    /// release ServiceAccount's token; waits for /readyz.
    pub async fn run(&self, client: &Client, dir: &Path, log: &Path) -> OperatorProcess {
        self.run_with(client, dir, log, &[]).await
    }

    /// [`Self::run`] with extra environment variables (a proxy, say).
    pub async fn run_with(
        &self,
        client: &Client,
        dir: &Path,
        log: &Path,
        extra: &[(&str, &str)],
    ) -> OperatorProcess {
        let (args, mut env, kubeconfig) = self.launch(client, dir).await;
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut p = OperatorProcess::start(&kubeconfig, &args, &env, log);
        p.wait_ready(60).await;
        p
    }

    /// What the release's pod would be started with: the Deployment's arguments (without
    /// `--listen`), its environment, and a kubeconfig (written into `dir`) holding the
    /// release's ServiceAccount token.
    pub async fn launch(
        &self,
        client: &Client,
        dir: &Path,
    ) -> (Vec<String>, Vec<(String, String)>, std::path::PathBuf) {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &self.namespace);
        let d = deployments
            .get(&self.fullname())
            .await
            .expect("the release's Deployment");
        let container = d.spec.unwrap().template.spec.unwrap().containers.remove(0);
        let args: Vec<String> = container
            .args
            .unwrap_or_default()
            .into_iter()
            .filter(|a| !a.starts_with("--listen="))
            .map(|a| a.replace("$(POD_NAMESPACE)", &self.namespace))
            .collect();
        let rust_log = container
            .env
            .unwrap_or_default()
            .into_iter()
            .find(|e| e.name == "RUST_LOG")
            .and_then(|e| e.value)
            .unwrap_or_default();
        let token = service_account_token(client, &self.namespace, &self.fullname()).await;
        let kubeconfig = self.kube.kubeconfig_for_token(&token, &self.namespace, dir);
        let env = vec![
            (
                "POD_NAME".to_owned(),
                format!("{}-test-pod", self.fullname()),
            ),
            ("POD_NAMESPACE".to_owned(), self.namespace.clone()),
            ("RUST_LOG".to_owned(), rust_log),
        ];
        (args, env, kubeconfig)
    }
}
