//! The Kubernetes side of a reconcile's execute step: the managed Secret, the Deployments
//! given back and applied, as [`actions::plan`] decided, and the zero-touch rotation on the
//! decided status; and the Deployment reads of the gather step. Reports only what execution alone can learn (a 409) to
//! [`actions::conclude`].

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use tracing::info;

use jiff::Timestamp;

use super::{Context, Error};
use crate::api::{MicrosoftMailIntegration, Target};
use crate::controller::index::OwnWrites;
use crate::decide::Decision;
use crate::decide::actions::{self, Actions, Executed, Targets};
use crate::inject::{self, FIELD_MANAGER};

/// Carries the plan's Kubernetes writes out: the managed Secret, releases, applies. A 409
/// on an apply (another field manager owns the same fields) is never forced: it goes back
/// to the pure core as an `EnvConflict`.
pub async fn kubernetes(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    plan: &Actions,
    done: &mut Executed,
) -> Result<(), Error> {
    let ns = mmi.namespace().unwrap_or_default();
    if let Some(write) = &plan.managed_secret {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        let name = inject::managed_secret_name(&mmi.name_any());
        let mut pp = PatchParams::apply(FIELD_MANAGER);
        pp.force = write.force;
        let written = secrets
            .patch(&name, &pp, &Patch::Apply(&write.body))
            .await?;
        let rv = written.metadata.resource_version.as_deref();
        ctx.own_writes.record(OwnWrites::SECRET, &ns, &name, rv);
        info!(secret = %name, "managed Secret updated with the validated configuration");
    }
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    for name in &plan.releases {
        release(&deployments, mmi, name, &ctx.own_writes).await?;
    }
    let Targets::Apply { plans, .. } = &plan.targets else {
        return Ok(());
    };
    let manager = inject::field_manager(&ns, &mmi.name_any());
    for (idx, p) in plans.iter().enumerate() {
        if p.up_to_date && !p.legacy_owner {
            continue;
        }
        match apply_target(&deployments, &manager, p).await {
            Ok(d) => {
                let rv = d.metadata.resource_version.as_deref();
                let own = &ctx.own_writes;
                own.record(OwnWrites::DEPLOYMENT, &ns, &p.deployment, rv);
                info!(deployment = %p.deployment, "configuration injected");
            }
            Err(kube::Error::Api(s)) if s.code == 409 => done.conflicts.push((idx, s.message)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One Deployment's apply as the integration's own field manager. Where the shared
/// manager of earlier versions still owns the fields, they are handed over first: applied
/// once more as that manager (as before the upgrade, so no conflict with itself), then as
/// the integration's manager (equal values: now owned by both), then given up by the
/// shared one. Nothing is removed on the way; afterwards only this integration's manager
/// holds its fields, and its release removes them.
async fn apply_target(
    deployments: &Api<Deployment>,
    manager: &str,
    p: &inject::Plan,
) -> Result<Deployment, kube::Error> {
    let apply = |m: &str| PatchParams::apply(m);
    if p.legacy_owner {
        deployments
            .patch(
                &p.deployment,
                &apply(FIELD_MANAGER),
                &Patch::Apply(&p.patch),
            )
            .await?;
    }
    let applied = deployments
        .patch(&p.deployment, &apply(manager), &Patch::Apply(&p.patch))
        .await?;
    if !p.legacy_owner {
        return Ok(applied);
    }
    let ns = deployments.namespace().unwrap_or_default();
    let empty = inject::release_patch(ns, &p.deployment);
    let handed = deployments
        .patch(&p.deployment, &apply(FIELD_MANAGER), &Patch::Apply(&empty))
        .await?;
    info!(deployment = %p.deployment, manager, "fields handed over from the shared field manager");
    Ok(handed)
}

/// Gives back what this integration owns in a Deployment that was there when listed: an
/// empty apply as its own field manager, which removes only the fields no other manager
/// holds, so another integration's entries stay whatever this one's spec says. Fields the
/// shared manager of earlier versions still holds are given up too when they can only be
/// this integration's ([`inject::legacy_release`]). An apply to a missing object is a
/// create (refused: 422 for a Deployment without a spec, 403 in a terminating namespace),
/// so a failure is checked with a fresh read: a Deployment deleted meanwhile is released
/// already.
pub async fn release(
    deployments: &Api<Deployment>,
    mmi: &MicrosoftMailIntegration,
    name: &str,
    own: &OwnWrites,
) -> Result<(), Error> {
    let ns = deployments.namespace().unwrap_or_default();
    let manager = inject::field_manager(ns, &mmi.name_any());
    let empty = inject::release_patch(ns, name);
    let pp = PatchParams::apply(&manager);
    let mut patched = deployments.patch(name, &pp, &Patch::Apply(&empty)).await;
    let secret = inject::managed_secret_name(&mmi.name_any());
    if let Ok(d) = &patched
        && inject::legacy_release(d, &secret)
    {
        let pp = PatchParams::apply(FIELD_MANAGER);
        patched = deployments.patch(name, &pp, &Patch::Apply(&empty)).await;
    }
    let err = match patched {
        Err(err) => err,
        Ok(d) => {
            let rv = d.metadata.resource_version.as_deref();
            own.record(OwnWrites::DEPLOYMENT, ns, name, rv);
            info!(
                deployment = name,
                "removed the operator's env entries and annotation"
            );
            return Ok(());
        }
    };
    match deployments.get_opt(name).await? {
        None => {
            info!(
                deployment = name,
                "Deployment deleted meanwhile; nothing to give back"
            );
            Ok(())
        }
        Some(_) => Err(err.into()),
    }
}

/// The Deployments the integration targets now or injected before, in full: by name
/// with one GET each, by selector from a metadata-only list (no pod templates) and then a
/// GET of each match. Listing whole Deployments on every reconcile cost time and memory in
/// proportion to the namespace.
pub async fn targeted_deployments(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
) -> Result<Vec<Deployment>, Error> {
    let api: Api<Deployment> =
        Api::namespaced(ctx.client.clone(), &mmi.namespace().unwrap_or_default());
    let targets: &[Target] = &mmi.spec.targets;
    let mut names: BTreeSet<String> = targets
        .iter()
        .filter_map(|t| t.deployment_name.clone())
        .chain(actions::injected_before(mmi))
        .collect();
    if targets.iter().any(|t| t.deployment_name.is_none()) {
        for d in api.list_metadata(&ListParams::default()).await?.items {
            let d = Deployment {
                metadata: d.metadata,
                ..Default::default()
            };
            if targets.iter().any(|t| inject::selects(t, &d)) {
                names.extend(d.metadata.name);
            }
        }
    }
    let mut found = vec![];
    for name in names {
        found.extend(api.get_opt(&name).await?);
    }
    Ok(found)
}

/// Zero-touch rotation on the decided status (its own plan and execute, in
/// [`crate::controller::rotate`]), folded into the decision. Graph writes go only to allowed hosts: a
/// refused integration rotates nothing (its HostNotAllowed is already on CredentialsValid)
/// and keeps its rotation status.
pub async fn rotation(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    d: &mut Decision,
    allowed: bool,
    now: Timestamp,
) -> Result<(), Error> {
    let rotated = if allowed {
        let ms = ctx.validations.client();
        let key = ctx.key_of(mmi);
        let others = &ctx.indexes;
        crate::controller::rotate::run(mmi, &ctx.client, ms, others, &key, &d.status, now).await?
    } else {
        crate::rotation::Transition {
            status: mmi.status.as_ref().and_then(|s| s.rotation.clone()),
            events: vec![],
            requeue: None,
            outcome: None,
        }
    };
    if let Some(outcome) = rotated.outcome {
        ctx.metrics.rotation_ended(outcome);
    }
    crate::rotation::fold(d, rotated, now, mmi.metadata.generation);
    Ok(())
}
