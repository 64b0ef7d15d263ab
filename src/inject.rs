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

mod owners;
pub use owners::{
    field_manager, is_operator_manager, legacy_release, managed_by, orphaned_containers, owned_by,
};

/// Field manager of the writes to objects that belong to one integration alone (its
/// status, its managed Secret), and of every write before per-integration managers
/// (objects it still owns are migrated, see [`owners::legacy_release`]).
pub const FIELD_MANAGER: &str = "nocobase-mail-operator";

/// Pod-template annotation holding the validated configuration's fingerprint.
pub const FINGERPRINT_ANNOTATION: &str = "nocobase-mail-operator.dev/config-fingerprint";
/// Label on the managed Secret naming its integration.
pub const INTEGRATION_LABEL: &str = "nocobase-mail-operator.dev/integration";
/// Keys of the managed Secret.
pub const KEY_CLIENT_ID: &str = "client-id";
pub const KEY_CLIENT_SECRET: &str = "client-secret";
pub const KEY_TENANT_ID: &str = "tenant-id";

/// Suffix of every managed Secret's name.
const MANAGED_SECRET_SUFFIX: &str = "-microsoft-credentials";

/// `<integration>-microsoft-credentials`, in the integration's namespace.
pub fn managed_secret_name(integration: &str) -> String {
    format!("{integration}{MANAGED_SECRET_SUFFIX}")
}

/// Whether a Secret found under the managed name is this integration's own: it carries a
/// controller owner reference to the integration's UID. Anything else (a user's Secret that
/// happens to have the name, one left by a deleted integration of the same name) is never
/// written: applying into it would add the owner reference, and deleting the integration
/// would then garbage-collect the user's data with it.
pub fn is_own_managed_secret(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    integration_uid: &str,
) -> bool {
    !integration_uid.is_empty()
        && meta.owner_references.iter().flatten().any(|o| {
            o.controller == Some(true) && o.uid == integration_uid && o.kind == crate::api::KIND
        })
}

/// The message of `ManagedSecretConflict`.
pub fn managed_secret_conflict(namespace: &str, secret: &str) -> String {
    format!(
        "Secret {namespace}/{secret} exists and was not created by the operator for this integration (it has no controller owner reference to it); the operator does not touch it and injects nothing. Rename or delete that Secret, or give the integration another name."
    )
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
    // An empty selector is refused (CEL and `allow::check_resource`); should one slip
    // through, `selector_matches` selects nothing rather than every Deployment.
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    selector_matches(sel, dep.metadata.labels.as_ref().unwrap_or(&NONE))
}

/// Whether a label selector matches these labels (nothing is allocated: this runs for
/// every Deployment event in a namespace with selector targets).
/// An empty selector matches nothing here (it is refused at admission): the index and
/// `selects` must agree.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    {
        return false;
    }
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
    /// `OnChange` when any target selecting the Deployment asks for it.
    pub rollout: Rollout,
    /// The shared manager of earlier versions still owns fields here: they are handed
    /// over to the integration's own manager with this apply ([`owners::legacy_release`]).
    pub legacy_owner: bool,
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
    plan_merged(dep, &[target], secret, fingerprint)
}

/// The containers of `dep` a target selects (all when it names none).
fn selected_containers(
    dep: &Deployment,
    present: &[&str],
    target: &Target,
) -> Result<Vec<String>, PlanProblem> {
    let name = dep.metadata.name.as_deref().unwrap_or_default();
    if target.containers.is_empty() {
        if present.is_empty() {
            return Err(PlanProblem {
                reason: "ContainerNotFound",
                message: format!("Deployment {name} has no containers."),
            });
        }
        return Ok(present.iter().map(|s| (*s).to_owned()).collect());
    }
    let missing: Vec<&str> = target
        .containers
        .iter()
        .map(String::as_str)
        .filter(|c| !present.contains(c))
        .collect();
    if !missing.is_empty() {
        return Err(PlanProblem {
            reason: "ContainerNotFound",
            message: format!(
                "Deployment {name} has no container named {} (it has: {}).",
                crate::quote::list(&missing, ", "),
                crate::quote::list(present, ", ")
            ),
        });
    }
    Ok(target.containers.clone())
}

/// Env entries wanted per container, all targets together; two targets giving one name
/// different values in one container is a conflict in the spec itself.
fn wanted_env(
    dep: &Deployment,
    present: &[&str],
    targets: &[&Target],
    secret: &str,
) -> Result<BTreeMap<String, Vec<EnvVar>>, PlanProblem> {
    let name = dep.metadata.name.as_deref().unwrap_or_default();
    let mut wanted: BTreeMap<String, Vec<EnvVar>> = BTreeMap::new();
    for t in targets {
        for c in selected_containers(dep, present, t)? {
            let env = wanted.entry(c.clone()).or_default();
            for w in env_entries(t, secret) {
                match env.iter().find(|e| e.name == w.name) {
                    Some(e) if *e != w => {
                        return Err(PlanProblem {
                            reason: "EnvConflict",
                            message: format!(
                                "Two targets put {} into container {c} of Deployment {name} with different values; give them distinct names in spec.targets[].env.",
                                w.name
                            ),
                        });
                    }
                    Some(_) => {}
                    None => env.push(w),
                }
            }
        }
    }
    Ok(wanted)
}

/// The managed Secret an env entry reads, if it reads one of the operator's.
fn managed_ref(e: &EnvVar) -> Option<&str> {
    let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
    r.name
        .ends_with(MANAGED_SECRET_SUFFIX)
        .then_some(r.name.as_str())
}

/// Plans one Deployment for every target of one integration that selects it: one apply
/// with all their entries, so that targets never undo each other under the one field
/// manager. A Deployment already carrying another integration's configuration, or an
/// entry of the same name set by someone else, is an `EnvConflict`: never overwritten.
pub fn plan_merged(
    dep: &Deployment,
    targets: &[&Target],
    secret: &str,
    fingerprint: &str,
) -> Result<Plan, PlanProblem> {
    let name = dep.metadata.name.clone().unwrap_or_default();
    let pod = dep.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let containers: Vec<_> = pod.iter().flat_map(|p| p.containers.iter()).collect();
    let present = owners::present(dep, &containers);
    let wanted = wanted_env(dep, &present, targets, secret)?;
    let mut up_to_date = true;
    for c in &containers {
        let want = wanted.get(&c.name).map(Vec::as_slice).unwrap_or_default();
        for e in c.env.iter().flatten() {
            if let Some(other) = managed_ref(e).filter(|r| *r != secret) {
                return Err(PlanProblem {
                    reason: "EnvConflict",
                    message: format!(
                        "Deployment {name} already receives the configuration of another integration (Secret {other}, in {} of container {}); one integration per Deployment.",
                        e.name, c.name
                    ),
                });
            }
            // an entry of ours no longer wanted here is given back by the next apply
            up_to_date &= managed_ref(e).is_none() || want.iter().any(|w| w.name == e.name);
        }
        for w in want {
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
    let on_change = targets.iter().any(|t| t.rollout == Rollout::OnChange);
    let current_annotation = dep
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(FINGERPRINT_ANNOTATION))
        .map(String::as_str);
    let template_meta = if on_change {
        up_to_date &= current_annotation == Some(fingerprint);
        json!({"annotations": {FINGERPRINT_ANNOTATION: fingerprint}})
    } else {
        up_to_date &= current_annotation.is_none();
        json!({})
    };
    let patch = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": dep.metadata.namespace},
        "spec": {"template": {
            "metadata": template_meta,
            "spec": {"containers": wanted.iter().map(|(c, env)| json!({"name": c, "env": env})).collect::<Vec<_>>()}
        }}
    });
    Ok(Plan {
        deployment: name,
        containers: wanted.into_keys().collect(),
        patch,
        up_to_date,
        legacy_owner: owners::has_manager(dep, FIELD_MANAGER),
        rollout: if on_change {
            Rollout::OnChange
        } else {
            Rollout::Manual
        },
    })
}

/// One integration's targets against the Deployments of its namespace: one plan per
/// Deployment (sorted by name), and what could not be planned.
pub fn plan_targets(
    targets: &[Target],
    deployments: &[Deployment],
    namespace: &str,
    secret: &str,
    fingerprint: &str,
) -> (Vec<Plan>, Vec<PlanProblem>) {
    let mut problems = vec![];
    let mut by_deployment: BTreeMap<&str, (&Deployment, Vec<&Target>)> = BTreeMap::new();
    for (idx, t) in targets.iter().enumerate() {
        let matched: Vec<&Deployment> = deployments.iter().filter(|d| selects(t, d)).collect();
        if matched.is_empty() {
            let what = t.deployment_name.as_deref().map_or_else(
                || "no Deployment matches the selector".to_owned(),
                |n| format!("Deployment {n} does not exist"),
            );
            problems.push(PlanProblem {
                reason: "TargetNotFound",
                message: format!("targets[{idx}]: {what} in namespace {namespace}."),
            });
        }
        for d in matched {
            let name = d.metadata.name.as_deref().unwrap_or_default();
            by_deployment.entry(name).or_insert((d, vec![])).1.push(t);
        }
    }
    let mut plans = vec![];
    for (dep, ts) in by_deployment.into_values() {
        match plan_merged(dep, &ts, secret, fingerprint) {
            Ok(p) => plans.push(p),
            Err(p) => problems.push(p),
        }
    }
    (plans, problems)
}

/// The existing Deployments holding this integration's fields: those its status says it
/// injected, and those where its own field `manager` holds fields (an apply whose status
/// write was lost), sorted. A Deployment it merely targets, served by another
/// integration, is not among them.
pub fn holding(previously: &[String], manager: &str, deployments: &[Deployment]) -> Vec<String> {
    let mut names: Vec<String> = deployments
        .iter()
        .filter(|d| {
            let name = d.metadata.name.as_deref().unwrap_or_default();
            previously.iter().any(|p| p == name) || owners::owned_by(d, manager)
        })
        .filter_map(|d| d.metadata.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Deployments the integration injected before and targets no more: those still there
/// are to be released; those gone (deleted) are released already.
pub fn released_targets(
    previously: &[String],
    targets: &[Target],
    deployments: &[Deployment],
) -> (Vec<String>, Vec<String>) {
    let mut release = vec![];
    let mut disappeared = vec![];
    for name in previously {
        match deployments
            .iter()
            .find(|d| d.metadata.name.as_ref() == Some(name))
        {
            None => disappeared.push(name.clone()),
            Some(d) if !targets.iter().any(|t| selects(t, d)) => release.push(name.clone()),
            Some(_) => {}
        }
    }
    (release, disappeared)
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
