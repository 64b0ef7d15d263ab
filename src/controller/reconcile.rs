//! The reconciler: Kubernetes I/O around the pure decision core and injection plan.
//!
//! One reconcile reads the integration's Secret, asks Microsoft only when a validation is
//! due, keeps the managed Secret and the target Deployments in line with the last
//! configuration Microsoft accepted, and writes status and Events only when they change.

pub mod nocobase;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use secrecy::ExposeSecret;
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use super::backoff::ErrorBackoff;
use super::index::OwnWrites;
use super::validations::ValidationCache;
use crate::api::{
    InjectedTarget, MicrosoftMailIntegration, MicrosoftMailIntegrationStatus, Rollout, Target,
};
use crate::decide::{
    ConditionStatus, CredentialCheck, Delivery, EventSpec, InjectionReport, Inputs, acceptance,
    decide, delivery, event_note, fold_attempt, interval, validation_due,
};
use crate::inject::{self, FIELD_MANAGER, FINGERPRINT_ANNOTATION};
use crate::input::Credentials;
use crate::microsoft::Verdict;
use crate::telemetry::Metrics;

/// Removes the operator's env entries and annotation from Deployments before the
/// integration goes away.
pub const FINALIZER: &str = "nocobase-mail-operator.dev/cleanup";

pub use crate::clock::Clock;

/// Everything a reconcile needs; shared by all reconciles.
pub struct Context {
    pub client: kube::Client,
    /// Events, through kube's recorder split by object ([`super::events`]).
    pub recorder: super::events::Recorders,
    pub validations: ValidationCache,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// The outbound HTTP client, built once (with `--ca-bundle`) and reused by every
    /// NocoBase request.
    pub http: reqwest::Client,
    /// Failures per integration, for [`error_policy`].
    pub error_backoff: ErrorBackoff,
    /// Where a credential may be sent (`--allowed-*` flags); checked before any request.
    pub allow: crate::allow::AllowList,
    /// What the operator's own writes produced, so their watch echoes trigger nothing.
    pub own_writes: OwnWrites,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// Entry point for the controller runtime.
pub async fn reconcile(
    mmi: Arc<MicrosoftMailIntegration>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let ns = mmi.namespace().unwrap_or_default();
    let name = mmi.name_any();
    let span = info_span!("reconcile", namespace = %ns, name = %name);
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let api: Api<MicrosoftMailIntegration> = Api::namespaced(ctx.client.clone(), &ns);
    // Deleting: NocoBase's variables first, which may take a while (NocoBase restarting);
    // the finalizer stays until that is done or given up.
    let waiting = nocobase::cleanup_nocobase(&mmi, &ctx)
        .instrument(span.clone())
        .await;
    if let Some(result) = waiting.transpose() {
        ctx.metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        return result;
    }
    let result = finalizer(&api, FINALIZER, mmi, |event| async {
        match event {
            Finalizer::Apply(m) => apply(&m, &ctx).await,
            Finalizer::Cleanup(m) => cleanup(&m, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.error_backoff.reset(&format!("{ns}/{name}"));
    }
    result
}

/// Kubernetes API errors are retried with per-integration exponential backoff and jitter
/// (about 1 s doubling to 5 min, see [`super::backoff`]); never a hot loop, never a crash.
pub fn error_policy(mmi: Arc<MicrosoftMailIntegration>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_errors.inc();
    let (ns, name) = (mmi.namespace().unwrap_or_default(), mmi.name_any());
    let wait = ctx.error_backoff.next(&format!("{ns}/{name}"));
    warn!(namespace = %ns, name = %name, error = %err, retry_in_ms = wait.as_millis() as u64, "reconcile failed; retrying");
    Action::requeue(wait)
}

/// Reads the referenced Secret: a usable credential set with its fingerprint, or a precise
/// problem. The secret's value lives only in the returned [`Credentials`].
async fn read_credentials(
    ctx: &Context,
    mmi: &MicrosoftMailIntegration,
) -> Result<(CredentialCheck, Option<Credentials>), Error> {
    let ns = mmi.namespace().unwrap_or_default();
    // Before the Secret is read: an integration the operator will not serve (a host
    // outside the allow-lists, ...) learns nothing about it, not even its key names.
    if let Err(p) = crate::allow::check_resource(&mmi.name_any(), &mmi.spec, &ctx.allow) {
        let problem = CredentialCheck::Problem {
            reason: p.reason.into(),
            message: p.message,
        };
        return Ok((problem, None));
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = secrets.get_opt(&mmi.spec.client_secret_ref.name).await?;
    Ok(crate::credentials::check(mmi, secret.as_ref()))
}

fn now(ctx: &Context) -> Timestamp {
    crate::clock::now_seconds(&ctx.clock)
}

async fn apply(mmi: &MicrosoftMailIntegration, ctx: &Context) -> Result<Action, Error> {
    let ns = mmi.namespace().unwrap_or_default();
    let name = mmi.name_any();
    let now = now(ctx);
    let previous = mmi.status.clone().unwrap_or_default();
    let (check, creds) = read_credentials(ctx, mmi).await?;

    // Ask Microsoft only when due.
    let attempt: Option<Verdict> = match (&check, &creds) {
        (CredentialCheck::Ready { fingerprint }, Some(c))
            if validation_due(&mmi.spec, &previous, fingerprint, now).is_none() =>
        {
            let v = ctx
                .validations
                .validate(
                    c,
                    mmi.spec.secret_expiry.discover_from_graph,
                    interval(&mmi.spec).unsigned_abs(),
                )
                .await;
            info!(
                outcome = v.outcome.as_str(),
                reason = v.reason,
                aadsts = v.aadsts_code,
                "validated with Microsoft"
            );
            Some(v)
        }
        _ => None,
    };

    // Did Microsoft accept the credentials now in the Secret? Asked once, for every writer.
    let gate = check.fingerprint().map_or(Delivery::Withheld, |fp| {
        let records = fold_attempt(&previous, Some(fp), attempt.as_ref(), now);
        delivery(&mmi.spec, acceptance(&records, fp))
    });
    let injection = inject_targets(mmi, ctx, &previous, &check, creds.as_ref(), gate).await?;
    let nocobase = match &mmi.spec.nocobase {
        Some(nb) => Some(
            nocobase::sync_nocobase(mmi, nb, ctx, &previous, &check, creds.as_ref(), gate).await?,
        ),
        None => None,
    };
    let mail_settings = match super::mail::enabled(mmi) {
        Some((nb, ms)) => {
            let client = nocobase::nocobase_client(mmi, nb, ctx).await?;
            let (c, cr) = (&check, creds.as_ref());
            Some(super::mail::sync_mail_settings(mmi, ms, client, &previous, c, cr, gate).await)
        }
        None => None,
    };
    let spec = super::rotate::effective_spec(mmi, creds.as_ref());
    let mut d = decide(&Inputs {
        spec: &spec,
        generation: mmi.metadata.generation,
        previous: &previous,
        now,
        credentials: &check,
        attempt: attempt.as_ref(),
        injection: &injection,
        nocobase: nocobase.as_ref(),
        mail_settings: mail_settings.as_ref(),
    });
    // Graph writes go only to allowed hosts: a refused integration rotates nothing (its
    // HostNotAllowed is already on CredentialsValid) and keeps its rotation status.
    let rotated = if crate::allow::check_resource(&name, &mmi.spec, &ctx.allow).is_ok() {
        super::rotate::run(mmi, &ctx.client, ctx.validations.client(), &d.status, now).await?
    } else {
        crate::rotation::Transition {
            status: previous.rotation.clone(),
            events: vec![],
            requeue: None,
            outcome: None,
        }
    };
    if let Some(outcome) = rotated.outcome {
        ctx.metrics.rotation_ended(outcome);
    }
    crate::rotation::fold(&mut d, rotated, now, mmi.metadata.generation);

    if mmi.status.as_ref() != Some(&d.status) {
        let api: Api<MicrosoftMailIntegration> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({
            "apiVersion": MicrosoftMailIntegration::api_version(&()),
            "kind": MicrosoftMailIntegration::kind(&()),
            "status": d.status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    publish_events(mmi, ctx, &d.events).await;
    ctx.metrics.set_integration(&ns, &name, &d.status);
    // a NocoBase that is down or restarting is asked again soon, not at the next validation
    let mut requeue = match nocobase.as_ref().and_then(|nb| nb.retry_after) {
        Some(soon) => d.requeue_after.min(soon),
        None => d.requeue_after,
    };
    // the email manager's settings, likewise, while NocoBase is down or restarting
    if let Some(soon) = mail_settings.as_ref().and_then(|m| m.retry_after) {
        requeue = requeue.min(soon);
    }
    Ok(Action::requeue(requeue))
}

/// Records the decided Events; an Event lost is not worth failing the reconcile over.
async fn publish_events(mmi: &MicrosoftMailIntegration, ctx: &Context, events: &[EventSpec]) {
    let reference = mmi.object_ref(&());
    for e in events {
        let ev = Event {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.clone(),
            note: Some(event_note(&e.note)),
            action: e.action.into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&ev, &reference).await {
            warn!(error = %err, reason = e.reason, "could not record Event");
        }
    }
}

/// Keeps the managed Secret and the target Deployments in line; reports what happened.
async fn inject_targets(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    previous: &MicrosoftMailIntegrationStatus,
    check: &CredentialCheck,
    creds: Option<&Credentials>,
    gate: Delivery,
) -> Result<InjectionReport, Error> {
    let ns = mmi.namespace().unwrap_or_default();
    let secret_name = inject::managed_secret_name(&mmi.name_any());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);

    // 1. The managed Secret: written only with credentials Microsoft accepted (or, opted
    //    in, not yet judged because Microsoft was unreachable); never with rejected ones.
    let existing = secrets.get_opt(&secret_name).await?;
    if let Some(s) = &existing
        && !inject::is_own_managed_secret(&s.metadata, &mmi.uid().unwrap_or_default())
    {
        return Ok(InjectionReport {
            status: ConditionStatus::False,
            reason: "ManagedSecretConflict".into(),
            message: inject::managed_secret_conflict(&ns, &secret_name),
            injected: previous.injected.clone(),
            disappeared: vec![],
        });
    }
    let mut config_fp = existing
        .as_ref()
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(FINGERPRINT_ANNOTATION))
        .cloned();
    let mut note = String::new();
    if let (CredentialCheck::Ready { fingerprint }, Some(c)) = (check, creds) {
        // opted in: credentials Microsoft has not judged yet (never rejected ones)
        let unverified_ok = gate == Delivery::Unverified;
        if gate != Delivery::Withheld {
            if config_fp.as_deref() != Some(fingerprint.as_str()) {
                let body = inject::managed_secret(
                    mmi,
                    &c.client_id,
                    &c.tenant_id,
                    c.client_secret.expose_secret(),
                    fingerprint,
                );
                // Force only into the operator's own Secret; one created meanwhile by
                // someone else makes this apply conflict instead of taking it over.
                let mut pp = PatchParams::apply(FIELD_MANAGER);
                pp.force = existing.is_some();
                let written = secrets
                    .patch(&secret_name, &pp, &Patch::Apply(&body))
                    .await?;
                let rv = written.metadata.resource_version.as_deref();
                ctx.own_writes
                    .record(OwnWrites::SECRET, &ns, &secret_name, rv);
                info!(secret = %secret_name, "managed Secret updated with the validated configuration");
                config_fp = Some(fingerprint.clone());
            }
            if unverified_ok {
                note = " Microsoft could not confirm these credentials yet; they were injected because injectUnverified is set.".into();
            }
        } else if config_fp.is_some() {
            note = " The credentials now in the Secret are not confirmed by Microsoft, so the previously validated configuration stays in place.".into();
        }
    }

    // Nothing targeted now or before: no Deployment to read.
    if mmi.spec.targets.is_empty() && previous.injected.is_empty() {
        return Ok(InjectionReport::no_targets());
    }

    let Some(config_fp) = config_fp.filter(|_| !mmi.spec.targets.is_empty()) else {
        let (_, disappeared) = release_untargeted(mmi, ctx, &deployments, previous).await?;
        return Ok(if mmi.spec.targets.is_empty() {
            InjectionReport {
                disappeared,
                ..InjectionReport::no_targets()
            }
        } else {
            InjectionReport {
                status: ConditionStatus::False,
                reason: "AwaitingValidCredentials".into(),
                message: "Nothing is injected until Microsoft accepts the credentials.".into(),
                injected: vec![],
                disappeared,
            }
        });
    };
    inject_deployments(
        mmi,
        ctx,
        &deployments,
        previous,
        &secret_name,
        &config_fp,
        &note,
    )
    .await
}

/// Reads the targeted and the previously injected Deployments and gives back what the operator owns in those it
/// injected before and targets no more. Returns the list, and the previously injected
/// Deployments that were deleted (nothing to give back).
async fn release_untargeted(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    deployments: &Api<Deployment>,
    previous: &MicrosoftMailIntegrationStatus,
) -> Result<(Vec<Deployment>, Vec<String>), Error> {
    let before: Vec<String> = previous
        .injected
        .iter()
        .map(|i| i.deployment.clone())
        .collect();
    let all = targeted_deployments(deployments, &mmi.spec.targets, &before).await?;
    let (release_now, disappeared) = inject::released_targets(&before, &mmi.spec.targets, &all);
    for name in &release_now {
        release(deployments, name, &ctx.own_writes).await?;
    }
    Ok((all, disappeared))
}

/// Applies one Deployment's plan unless it is up to date; a field another manager owns is
/// an `EnvConflict`, never forced.
async fn apply_plan(
    deployments: &Api<Deployment>,
    plan: &inject::Plan,
    own: &OwnWrites,
) -> Result<Option<inject::PlanProblem>, Error> {
    if plan.up_to_date {
        return Ok(None);
    }
    let pp = PatchParams::apply(FIELD_MANAGER);
    match deployments
        .patch(&plan.deployment, &pp, &Patch::Apply(&plan.patch))
        .await
    {
        Ok(d) => {
            let (ns, rv) = (
                d.metadata.namespace.as_deref(),
                d.metadata.resource_version.as_deref(),
            );
            own.record(
                OwnWrites::DEPLOYMENT,
                ns.unwrap_or_default(),
                &plan.deployment,
                rv,
            );
            info!(deployment = %plan.deployment, "configuration injected");
            Ok(None)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Some(inject::PlanProblem {
            reason: "EnvConflict",
            message: format!(
                "Deployment {}: another field manager owns the same fields: {}",
                plan.deployment, s.message
            ),
        })),
        Err(e) => Err(e.into()),
    }
}

/// Applies the validated configuration to every targeted Deployment (one apply per
/// Deployment, all targets merged), only where it differs.
async fn inject_deployments(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    deployments: &Api<Deployment>,
    previous: &MicrosoftMailIntegrationStatus,
    secret_name: &str,
    config_fp: &str,
    note: &str,
) -> Result<InjectionReport, Error> {
    let ns = mmi.namespace().unwrap_or_default();
    let (all, disappeared) = release_untargeted(mmi, ctx, deployments, previous).await?;
    let (plans, mut problems) =
        inject::plan_targets(&mmi.spec.targets, &all, &ns, secret_name, config_fp);
    let mut injected: Vec<InjectedTarget> = vec![];
    for plan in plans {
        if let Some(p) = apply_plan(deployments, &plan, &ctx.own_writes).await? {
            problems.push(p);
            continue;
        }
        injected.push(InjectedTarget {
            deployment: plan.deployment,
            containers: plan.containers,
            fingerprint: config_fp.to_owned(),
            rollout: plan.rollout,
        });
    }
    let gone = if disappeared.is_empty() {
        String::new()
    } else {
        format!(
            " Deployment(s) {} received the configuration before and were deleted since.",
            disappeared.join(", ")
        )
    };
    if let Some(first) = problems.first() {
        let message = problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        return Ok(InjectionReport {
            status: ConditionStatus::False,
            reason: first.reason.into(),
            message: format!("{message}{gone}"),
            injected,
            disappeared,
        });
    }
    let names: Vec<&str> = injected.iter().map(|i| i.deployment.as_str()).collect();
    let manual = injected.iter().any(|i| i.rollout == Rollout::Manual);
    Ok(InjectionReport {
        status: ConditionStatus::True,
        reason: "Injected".into(),
        message: format!(
            "The validated configuration is in Deployment(s) {} through Secret {secret_name}.{}{note}{gone}",
            names.join(", "),
            if manual {
                " Rollout is Manual for some targets: restart their pods yourself to pick up a change."
            } else {
                ""
            }
        ),
        injected,
        disappeared,
    })
}

/// Gives back what the operator owns in a Deployment that was there when listed. An apply
/// to a missing object is a create (refused: 422 for a Deployment without a spec, 403 in a
/// terminating namespace), so a failure is checked with a fresh read: a Deployment deleted
/// meanwhile is released already.
async fn release(deployments: &Api<Deployment>, name: &str, own: &OwnWrites) -> Result<(), Error> {
    let ns = deployments.namespace().unwrap_or_default();
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let patched = deployments
        .patch(name, &pp, &Patch::Apply(&inject::release_patch(ns, name)))
        .await;
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

/// The Deployments the targets select and those named in `also` (injected before), in
/// full: by name with one GET each, by selector from a metadata-only list (no pod
/// templates) and then a GET of each match. Listing whole Deployments on every reconcile
/// cost time and memory in proportion to the namespace.
async fn targeted_deployments(
    api: &Api<Deployment>,
    targets: &[Target],
    also: &[String],
) -> Result<Vec<Deployment>, Error> {
    let mut names: BTreeSet<String> = targets
        .iter()
        .filter_map(|t| t.deployment_name.clone())
        .chain(also.iter().cloned())
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

/// On deletion: give back every Deployment field the operator owns. The managed Secret is
/// garbage-collected with its owner; the user's Secret is never touched. NocoBase's
/// variables and the email manager's fields were cleaned up before
/// ([`nocobase::cleanup_nocobase`]), when opted in.
async fn cleanup(mmi: &MicrosoftMailIntegration, ctx: &Context) -> Result<Action, Error> {
    let ns = mmi.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let before: Vec<String> = mmi
        .status
        .iter()
        .flat_map(|s| s.injected.iter().map(|i| i.deployment.clone()))
        .collect();
    let all = targeted_deployments(&deployments, &mmi.spec.targets, &before).await?;
    // only Deployments that exist: a deleted one (or a namespace being deleted) has
    // nothing left to give back, and must never hold the deletion up
    let names = inject::holding(&before, &mmi.spec.targets, &all);
    for n in &names {
        release(&deployments, n, &ctx.own_writes).await?;
    }
    ctx.metrics.remove_integration(&ns, &mmi.name_any());
    info!(namespace = %ns, name = mmi.name_any(), released = names.len(), "integration deleted; Deployments restored");
    Ok(Action::await_change())
}
