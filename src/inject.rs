//! The injection plan (pure): observed Deployment + validated configuration -> the
//! server-side apply patch the operator owns, and the Deployment as it will look.
//!
//! The operator owns, through its own field manager, exactly: three env entries (by name)
//! in each selected container, and one pod-template annotation (rollout `OnChange`). The
//! env entries reference the managed Secret, never a plain value, so a rotation changes
//! only the annotation, and pods roll once.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use crate::api::{MicrosoftMailIntegration, Rollout, Target};

/// Field manager for every write the operator makes.
pub const FIELD_MANAGER: &str = "nocobase-mail-operator";
/// Pod-template annotation holding the validated configuration's fingerprint.
pub const FINGERPRINT_ANNOTATION: &str = "nocobase-mail-operator.dev/config-fingerprint";
/// Label on the managed Secret naming its integration.
pub const INTEGRATION_LABEL: &str = "nocobase-mail-operator.dev/integration";
/// Keys of the managed Secret.
pub const KEY_CLIENT_ID: &str = "client-id";
pub const KEY_CLIENT_SECRET: &str = "client-secret";
pub const KEY_TENANT_ID: &str = "tenant-id";

/// `<integration>-microsoft-credentials`, in the integration's namespace.
pub fn managed_secret_name(integration: &str) -> String {
    format!("{integration}-microsoft-credentials")
}

/// Does the target select this Deployment?
pub fn selects(target: &Target, dep: &Deployment) -> bool {
    let name = dep.metadata.name.as_deref().unwrap_or_default();
    if let Some(n) = &target.deployment_name {
        return n == name;
    }
    let Some(sel) = &target.deployment_selector else {
        return false;
    };
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    selector_matches(sel, dep.metadata.labels.as_ref().unwrap_or(&NONE))
}

/// Whether a label selector matches these labels (nothing is allocated: this runs for
/// every Deployment event in a namespace with selector targets).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Why a Deployment cannot receive the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanProblem {
    /// `ContainerNotFound` or `EnvConflict`.
    pub reason: &'static str,
    pub message: String,
}

/// What the operator applies to one Deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub deployment: String,
    pub containers: Vec<String>,
    /// The apply configuration: only the fields the operator owns.
    pub patch: Value,
    /// The Deployment already carries exactly this; nothing to write.
    pub up_to_date: bool,
}

fn env_entries(target: &Target, secret: &str) -> Vec<EnvVar> {
    [
        (&target.env.client_id, KEY_CLIENT_ID),
        (&target.env.client_secret, KEY_CLIENT_SECRET),
        (&target.env.tenant_id, KEY_TENANT_ID),
    ]
    .into_iter()
    .map(|(name, key)| EnvVar {
        name: name.clone(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..Default::default()
        }),
    })
    .collect()
}

/// Plans one Deployment for one target. `fingerprint` identifies the validated
/// configuration the managed Secret holds.
pub fn plan(
    dep: &Deployment,
    target: &Target,
    secret: &str,
    fingerprint: &str,
) -> Result<Plan, PlanProblem> {
    let name = dep.metadata.name.clone().unwrap_or_default();
    let pod = dep.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let present: Vec<&str> = pod
        .map(|p| p.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let selected: Vec<String> = if target.containers.is_empty() {
        present.iter().map(|s| (*s).to_owned()).collect()
    } else {
        let missing: Vec<&String> = target
            .containers
            .iter()
            .filter(|c| !present.contains(&c.as_str()))
            .collect();
        if !missing.is_empty() {
            return Err(PlanProblem {
                reason: "ContainerNotFound",
                message: format!(
                    "Deployment {name} has no container named {} (it has: {}).",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    present.join(", ")
                ),
            });
        }
        target.containers.clone()
    };
    if selected.is_empty() {
        return Err(PlanProblem {
            reason: "ContainerNotFound",
            message: format!("Deployment {name} has no containers."),
        });
    }
    let wanted = env_entries(target, secret);
    let mut up_to_date = true;
    for c in pod
        .into_iter()
        .flat_map(|p| p.containers.iter())
        .filter(|c| selected.contains(&c.name))
    {
        for w in &wanted {
            match c.env.iter().flatten().find(|e| e.name == w.name) {
                Some(e) if e == w => {}
                Some(_) => {
                    return Err(PlanProblem {
                        reason: "EnvConflict",
                        message: format!(
                            "Container {} of Deployment {name} already sets {} itself; the operator does not overwrite it. Remove that entry, or choose another name in spec.targets[].env.",
                            c.name, w.name
                        ),
                    });
                }
                None => up_to_date = false,
            }
        }
    }
    // entries left in containers no longer selected are given back by the next apply
    let stale = pod
        .into_iter()
        .flat_map(|p| p.containers.iter())
        .filter(|c| !selected.contains(&c.name))
        .any(|c| {
            c.env.iter().flatten().any(|e| {
                e.value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                    .is_some_and(|r| r.name == secret)
            })
        });
    up_to_date &= !stale;
    let current_annotation = dep
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(FINGERPRINT_ANNOTATION));
    let mut template_meta = json!({});
    match target.rollout {
        Rollout::OnChange => {
            up_to_date &= current_annotation.map(String::as_str) == Some(fingerprint);
            template_meta = json!({"annotations": {FINGERPRINT_ANNOTATION: fingerprint}});
        }
        Rollout::Manual => up_to_date &= current_annotation.is_none(),
    }
    let patch = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": dep.metadata.namespace},
        "spec": {"template": {
            "metadata": template_meta,
            "spec": {"containers": selected.iter().map(|c| json!({"name": c, "env": wanted})).collect::<Vec<_>>()}
        }}
    });
    Ok(Plan {
        deployment: name,
        containers: selected,
        patch,
        up_to_date,
    })
}

/// The apply configuration that gives up everything the operator owns in a Deployment
/// (the server removes fields no other manager owns).
pub fn release_patch(namespace: &str, deployment: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": deployment, "namespace": namespace}})
}

/// The Deployment as it will look once the plan is applied (for `render` and tests):
/// env entries replaced by name or appended, the annotation set; nothing else touched.
pub fn apply_locally(
    dep: &Deployment,
    plan: &Plan,
    target: &Target,
    secret: &str,
    fingerprint: &str,
) -> Deployment {
    let mut out = dep.clone();
    let wanted = env_entries(target, secret);
    if let Some(spec) = out.spec.as_mut() {
        if target.rollout == Rollout::OnChange {
            let meta = spec.template.metadata.get_or_insert_with(Default::default);
            meta.annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(FINGERPRINT_ANNOTATION.to_owned(), fingerprint.to_owned());
        }
        if let Some(pod) = spec.template.spec.as_mut() {
            for c in pod
                .containers
                .iter_mut()
                .filter(|c| plan.containers.contains(&c.name))
            {
                let env = c.env.get_or_insert_with(Vec::new);
                for w in &wanted {
                    match env.iter_mut().find(|e| e.name == w.name) {
                        Some(e) => *e = w.clone(),
                        None => env.push(w.clone()),
                    }
                }
            }
        }
    }
    out
}

/// The managed Secret's apply configuration: owned by the integration, labelled, and
/// holding the last configuration Microsoft accepted.
pub fn managed_secret(
    mmi: &MicrosoftMailIntegration,
    client_id: &str,
    tenant_id: &str,
    client_secret: &str,
    fingerprint: &str,
) -> Value {
    use kube::Resource;
    let name = mmi.metadata.name.clone().unwrap_or_default();
    let owner = mmi
        .controller_owner_ref(&())
        .map(|o| serde_json::to_value(o).expect("owner reference serializes"));
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": managed_secret_name(&name),
            "namespace": mmi.metadata.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": FIELD_MANAGER,
                INTEGRATION_LABEL: name,
            },
            "annotations": {FINGERPRINT_ANNOTATION: fingerprint},
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "type": "Opaque",
        "data": {
            KEY_CLIENT_ID: b64(client_id),
            KEY_TENANT_ID: b64(tenant_id),
            KEY_CLIENT_SECRET: b64(client_secret),
        }
    })
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
