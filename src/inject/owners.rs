//! Who owns which container of a Deployment, read from `metadata.managedFields`: the
//! containers another tool dropped and only the operator still holds are given back.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;
use serde_json::Value;

use super::{FIELD_MANAGER, INTEGRATION_LABEL, managed_ref};

/// Names of the containers each field manager owns in the pod template, read from
/// `metadata.managedFields` (`f:spec.f:template.f:spec.f:containers.k:{"name":..}`).
fn container_owners(dep: &Deployment) -> Vec<(bool, String)> {
    let mut out = vec![];
    for entry in dep.metadata.managed_fields.iter().flatten() {
        // the operator's managers, shared or per integration, all count as the operator
        let ours = entry.manager.as_deref().is_some_and(is_operator_manager);
        let Some(fields) = &entry.fields_v1 else {
            continue;
        };
        let containers = ["f:spec", "f:template", "f:spec", "f:containers"]
            .iter()
            .try_fold(&fields.0, |v, k| v.get(*k));
        for key in containers.and_then(Value::as_object).into_iter().flatten() {
            let name = key
                .0
                .strip_prefix("k:")
                .and_then(|k| serde_json::from_str::<Value>(k).ok())
                .and_then(|k| k.get("name").and_then(Value::as_str).map(str::to_owned));
            out.extend(name.map(|n| (ours, n)));
        }
    }
    out
}

/// Containers that only the operator still owns: another manager (Flux, Argo CD, kubectl
/// apply) dropped them from its configuration, and they survive only because the operator
/// co-owns their entry. They are left out of the next apply so that the API server removes
/// them, and never injected into. Without managedFields nothing is known: none.
pub fn orphaned_containers(dep: &Deployment) -> Vec<String> {
    let owners = container_owners(dep);
    let mut out: Vec<String> = owners
        .iter()
        .filter(|(ours, n)| *ours && !owners.iter().any(|(o, m)| !o && m == n))
        .map(|(_, n)| n.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The containers the operator may inject into: all but the orphaned ones.
pub(super) fn present<'a>(dep: &Deployment, containers: &[&'a Container]) -> Vec<&'a str> {
    let orphaned = orphaned_containers(dep);
    containers
        .iter()
        .map(|c| c.name.as_str())
        .filter(|c| !orphaned.iter().any(|o| o == c))
        .collect()
}

/// Whether `manager` holds an applied entry in the Deployment's managedFields.
pub(super) fn has_manager(dep: &Deployment, manager: &str) -> bool {
    dep.metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|e| e.manager.as_deref() == Some(manager) && e.operation.as_deref() == Some("Apply"))
}

/// Whether the integration's own field manager holds fields in the Deployment: it injected
/// there, whatever its status says (a status write lost after the apply).
pub fn owned_by(dep: &Deployment, manager: &str) -> bool {
    has_manager(dep, manager)
}

/// Whether the shared manager of earlier versions may give up its fields in this
/// Deployment on behalf of the integration whose managed Secret is `secret`: it owns some,
/// and every env entry reading a managed Secret reads this one. Then everything it owns
/// there is this integration's (one integration per Deployment), and what the
/// integration's own manager holds stays. With another integration's entries present,
/// nothing is released: they are that integration's to hand over.
pub fn legacy_release(dep: &Deployment, secret: &str) -> bool {
    let pod = dep.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let others = pod
        .iter()
        .flat_map(|p| {
            p.containers
                .iter()
                .chain(p.init_containers.iter().flatten())
        })
        .flat_map(|c| c.env.iter().flatten())
        .filter_map(managed_ref)
        .any(|r| r != secret);
    has_manager(dep, FIELD_MANAGER) && !others
}

/// Longest field manager name the API server accepts.
const MAX_FIELD_MANAGER: usize = 128;

/// The field manager of one integration's writes to objects that several integrations
/// can touch (the Deployments it injects, the Secret it rotates):
/// `nocobase-mail-operator/<namespace>/<name>`, or, when that would pass the API server's
/// 128 characters, `nocobase-mail-operator/h-` and a hash of namespace and name. An
/// apply of one integration then owns only its own fields, and one integration's apply
/// or release can never remove another's.
pub fn field_manager(namespace: &str, name: &str) -> String {
    let plain = format!("{FIELD_MANAGER}/{namespace}/{name}");
    if plain.len() <= MAX_FIELD_MANAGER {
        return plain;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{namespace}/{name}").as_bytes());
    format!("{FIELD_MANAGER}/h-{}", hex::encode(&digest[..16]))
}

/// Whether a field manager is the operator's: the shared one or a per-integration one.
pub fn is_operator_manager(manager: &str) -> bool {
    manager == FIELD_MANAGER
        || manager
            .strip_prefix(FIELD_MANAGER)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The integration a Secret is the managed Secret of, if it is one: it carries the
/// integration label or a controller owner reference to an integration. Such a Secret is
/// the operator's to write for that integration and is never read as another one's
/// `clientSecretRef` (a rotation would write into it).
pub fn managed_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(INTEGRATION_LABEL))
        .cloned();
    let owned = meta.owner_references.iter().flatten().find(|o| {
        o.controller == Some(true)
            && o.kind == crate::api::KIND
            && o.api_version.starts_with(crate::api::GROUP)
    });
    labelled.or_else(|| owned.map(|o| o.name.clone()))
}
