//! Where `register` leaves its result: the client secret Value in a Kubernetes Secret
//! (server-side apply of its own key only) and the `MicrosoftMailIntegration` naming it,
//! or both as YAML manifests for GitOps. The manifests are pure; [`Cluster`] is the I/O.

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::api::{Cloud, MicrosoftMailIntegration};

/// The field manager of `register`'s applies: distinct from the controller's, so that
/// `managedFields` tells who wrote what.
pub const FIELD_MANAGER: &str = "nocobase-mail-operator-register";

/// Names in the cluster.
#[derive(Clone, Debug)]
pub struct Names {
    pub namespace: String,
    pub integration: String,
    pub secret: String,
    pub key: String,
}

/// The integration's spec as `register` knows it.
#[derive(Clone, Debug, Default)]
pub struct SpecInput {
    pub tenant_id: String,
    pub client_id: String,
    pub cloud: Option<Cloud>,
    pub authority_host: Option<String>,
    pub graph_host: Option<String>,
    pub expires_at: Option<String>,
    pub rotation: bool,
    pub expiry_discovery: bool,
    /// `spec.nocobase`: url, API key Secret, publicUrl, app.
    pub nocobase: Option<(String, String, Option<String>, Option<String>)>,
    pub deployments: Vec<String>,
}

/// The `MicrosoftMailIntegration` (only the fields `register` owns).
pub fn integration_manifest(n: &Names, s: &SpecInput) -> Value {
    let mut spec = json!({
        "tenantId": s.tenant_id,
        "clientId": s.client_id,
        "clientSecretRef": {"name": n.secret, "key": n.key},
    });
    if let Some(c) = s.cloud.filter(|c| *c != Cloud::AzurePublic) {
        spec["cloud"] = serde_json::to_value(c).expect("a cloud serializes");
    }
    if let Some(h) = &s.authority_host {
        spec["authorityHost"] = json!(h);
    }
    if let Some(h) = &s.graph_host {
        spec["graphHost"] = json!(h);
    }
    // Graph is read only with a permission this command asked for (Application.Read.All,
    // or Application.ReadWrite.OwnedBy of an owner for rotation); without one the operator
    // would be refused (403) at every validation and report "expiry unknown" beside the
    // stated date. A re-run with the option turns it on.
    let mut expiry = json!({"discoverFromGraph": s.expiry_discovery || s.rotation});
    if let Some(t) = &s.expires_at {
        expiry["expiresAt"] = json!(t);
    }
    spec["secretExpiry"] = expiry;
    if s.rotation {
        spec["rotation"] = json!({"enabled": true});
    }
    if let Some((url, key, public, app)) = &s.nocobase {
        let mut nb = json!({"url": url, "apiKeySecretRef": {"name": key}});
        if let Some(p) = public {
            nb["publicUrl"] = json!(p);
        }
        if let Some(a) = app {
            nb["app"] = json!(a);
        }
        spec["nocobase"] = nb;
    }
    if !s.deployments.is_empty() {
        let targets: Vec<Value> = s
            .deployments
            .iter()
            .map(|d| json!({"deploymentName": d}))
            .collect();
        spec["targets"] = json!(targets);
    }
    json!({
        "apiVersion": "nocobase-mail-operator.dev/v1alpha1",
        "kind": crate::api::KIND,
        "metadata": {"name": n.integration, "namespace": n.namespace},
        "spec": spec,
    })
}

/// The Secret with only `register`'s key: `data` (base64) for the apply, `stringData` for
/// a manifest a person reads.
pub fn secret_manifest(n: &Names, value: &SecretString, readable: bool) -> Value {
    let v = value.expose_secret();
    let (field, encoded) = if readable {
        ("stringData", v.to_owned())
    } else {
        ("data", base64::engine::general_purpose::STANDARD.encode(v))
    };
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": n.secret, "namespace": n.namespace,
            "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER}},
        field: {n.key.clone(): encoded},
    })
}

/// The cluster of the kubeconfig (or the pod's service account).
pub struct Cluster {
    client: kube::Client,
    pub names: Names,
}

fn words(what: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!(
            "could not {what}: the API server answered {} {}: {}",
            s.code, s.reason, s.message
        ),
        e => format!("could not {what}: {e}"),
    }
}

impl Cluster {
    /// Connects; `namespace` defaults to the kubeconfig's.
    pub async fn connect(
        namespace: Option<String>,
        names: impl FnOnce(String) -> Names,
    ) -> Result<Self, String> {
        let client = kube::Client::try_default().await.map_err(|e| {
            format!("cannot reach the cluster ({e}); use --output yaml to work without one")
        })?;
        let ns = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
        Ok(Self {
            client,
            names: names(ns),
        })
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.names.namespace)
    }

    /// The Value now under the key (read before signing in: proves access and tells a
    /// re-run which secret is in use).
    pub async fn current_secret(&self) -> Result<Option<SecretString>, String> {
        let s = self
            .secrets()
            .get_opt(&self.names.secret)
            .await
            .map_err(|e| {
                words(
                    &format!(
                        "read the Secret {}/{}",
                        self.names.namespace, self.names.secret
                    ),
                    &e,
                )
            })?;
        Ok(s.and_then(|s| s.data)
            .and_then(|d| {
                d.get(&self.names.key)
                    .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
            })
            .filter(|v| !v.is_empty())
            .map(SecretString::from))
    }

    /// Writes the Value under the key only; other keys and their owners are untouched.
    pub async fn apply_secret(&self, value: &SecretString) -> Result<(), String> {
        let body = secret_manifest(&self.names, value, false);
        // forced: the key is replaced on purpose (a new secret was created for it)
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        self.secrets()
            .patch(&self.names.secret, &pp, &Patch::Apply(&body))
            .await
            .map(|_| ())
            .map_err(|e| {
                words(
                    &format!(
                        "write the Secret {}/{}",
                        self.names.namespace, self.names.secret
                    ),
                    &e,
                )
            })
    }

    fn integrations(&self) -> Api<MicrosoftMailIntegration> {
        Api::namespaced(self.client.clone(), &self.names.namespace)
    }

    pub async fn integration_exists(&self) -> Result<bool, String> {
        self.integrations()
            .get_opt(&self.names.integration)
            .await
            .map(|o| o.is_some())
            .map_err(|e| words("read the MicrosoftMailIntegration", &e))
    }

    /// Whether applying `body` would leave the integration's spec as it is: the server's own
    /// answer to the apply as a dry run, compared with the stored object. A no-op apply is
    /// not free: a server may store it anyway (1.20 does: a new resourceVersion and
    /// managedFields time), which wakes every watcher. Any doubt (absent, an error)
    /// says no, and the real apply then reports what is wrong.
    pub async fn integration_unchanged(&self, body: &Value) -> bool {
        let Ok(Some(live)) = self.integrations().get_opt(&self.names.integration).await else {
            return false;
        };
        let pp = PatchParams::apply(FIELD_MANAGER).dry_run();
        match self
            .integrations()
            .patch(&self.names.integration, &pp, &Patch::Apply(body))
            .await
        {
            Ok(would) => {
                serde_json::to_value(&would.spec).ok() == serde_json::to_value(&live.spec).ok()
                    && would.metadata.labels == live.metadata.labels
            }
            Err(_) => false,
        }
    }

    /// Applies the integration without force: a field someone else set is a conflict
    /// reported, not overwritten.
    pub async fn apply_integration(&self, body: &Value) -> Result<(), String> {
        let pp = PatchParams::apply(FIELD_MANAGER);
        self.integrations()
            .patch(&self.names.integration, &pp, &Patch::Apply(body))
            .await
            .map(|_| ())
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 404 => "could not apply the MicrosoftMailIntegration: its CRD is not installed (helm install the operator first, or kubectl apply -f crds/)".to_owned(),
                kube::Error::Api(s) if s.code == 409 => format!("could not apply the MicrosoftMailIntegration: a field was set by someone else ({}); change it yourself or delete the field", s.message),
                _ => words("apply the MicrosoftMailIntegration", &e),
            })
    }
}
