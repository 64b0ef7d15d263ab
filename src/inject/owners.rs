//! Who owns which container of a Deployment, read from `metadata.managedFields`: the
//! containers another tool dropped and only the operator still holds are given back.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;
use serde_json::Value;

use super::FIELD_MANAGER;

/// Names of the containers each field manager owns in the pod template, read from
/// `metadata.managedFields` (`f:spec.f:template.f:spec.f:containers.k:{"name":..}`).
fn container_owners(dep: &Deployment) -> Vec<(bool, String)> {
    let mut out = vec![];
    for entry in dep.metadata.managed_fields.iter().flatten() {
        let ours = entry.manager.as_deref() == Some(FIELD_MANAGER);
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
