//! The reconciler: Kubernetes I/O around the pure decision core and injection plan.
//!
//! One reconcile reads the integration's Secret, asks Microsoft only when a validation is
//! due, keeps the managed Secret and the target Deployments in line with the last
//! configuration Microsoft accepted, and writes status and Events only when they change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use super::validations::ValidationCache;
use crate::api::{
    InjectedTarget, MicrosoftMailIntegration, MicrosoftMailIntegrationStatus, NocoBaseSync, Rollout,
};
use crate::decide::{
    ConditionStatus, CredentialCheck, Delivery, InjectionReport, Inputs, NocoBaseReport,
    acceptance, decide, delivery, event_note, fold_attempt, interval, validation_due,
};
use crate::inject::{self, FIELD_MANAGER, FINGERPRINT_ANNOTATION};
use crate::input::Credentials;
use crate::microsoft::Verdict;
use crate::nocobase::{self, DesiredVar, NocoBaseClient, NocoBaseOptions, SyncedState, VarKind};
use crate::telemetry::Metrics;

/// Removes the operator's env entries and annotation from Deployments before the
/// integration goes away.
pub const FINALIZER: &str = "nocobase-mail-operator.dev/cleanup";

pub use crate::clock::Clock;

/// Everything a reconcile needs; shared by all reconciles.
pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub validations: ValidationCache,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// The outbound HTTP client, built once (with `--ca-bundle`) and reused by every
    /// NocoBase request.
    pub http: reqwest::Client,
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
    result
}

/// Kubernetes API errors are retried after a pause; never a hot loop, never a crash.
pub fn error_policy(mmi: Arc<MicrosoftMailIntegration>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_errors.inc();
    warn!(namespace = mmi.namespace().unwrap_or_default(), name = mmi.name_any(), error = %err, "reconcile failed; retrying in 30s");
    Action::requeue(Duration::from_secs(30))
}

/// Reads the referenced Secret: a usable credential set with its fingerprint, or a precise
/// problem. The secret's value lives only in the returned [`Credentials`].
async fn read_credentials(
    ctx: &Context,
    mmi: &MicrosoftMailIntegration,
) -> Result<(CredentialCheck, Option<Credentials>), Error> {
    let ns = mmi.namespace().unwrap_or_default();
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
        Some(nb) => {
            Some(sync_nocobase(mmi, nb, ctx, &previous, &check, creds.as_ref(), gate).await?)
        }
        None => None,
    };
    let mail_settings = match super::mail::enabled(mmi) {
        Some((nb, ms)) => {
            let client = nocobase_client(mmi, nb, ctx).await?;
            let (c, cr) = (&check, creds.as_ref());
            Some(super::mail::sync_mail_settings(mmi, ms, client, &previous, c, cr, gate).await)
        }
        None => None,
    };
    let d = decide(&Inputs {
        spec: &mmi.spec,
        generation: mmi.metadata.generation,
        previous: &previous,
        now,
        credentials: &check,
        attempt: attempt.as_ref(),
        injection: &injection,
        nocobase: nocobase.as_ref(),
        mail_settings: mail_settings.as_ref(),
    });

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
    let reference = mmi.object_ref(&());
    for e in &d.events {
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
            // an Event lost is not worth failing the reconcile over
            warn!(error = %err, reason = e.reason, "could not record Event");
        }
    }
    ctx.metrics.set_integration(&ns, &name, &d.status);
    // a NocoBase that is down or restarting is asked again soon, not at the next validation
    let nocobase_retry = nocobase.as_ref().is_some_and(|nb| nb.retry_soon)
        || mail_settings.as_ref().is_some_and(|m| m.retry_soon);
    let requeue = if nocobase_retry {
        d.requeue_after.min(Duration::from_secs(30))
    } else {
        d.requeue_after
    };
    Ok(Action::requeue(requeue))
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
                secrets
                    .patch(
                        &secret_name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&body),
                    )
                    .await?;
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

    // 2. Deployments no longer targeted give back what the operator owns.
    let all = deployments.list(&ListParams::default()).await?.items;
    let targeted = |d: &Deployment| mmi.spec.targets.iter().any(|t| inject::selects(t, d));
    for gone in previous.injected.iter().filter(|i| {
        !all.iter()
            .any(|d| d.name_any() == i.deployment && targeted(d))
    }) {
        release(&deployments, &ns, &gone.deployment).await?;
    }
    if mmi.spec.targets.is_empty() {
        return Ok(InjectionReport::no_targets());
    }
    let Some(config_fp) = config_fp else {
        return Ok(InjectionReport {
            status: ConditionStatus::False,
            reason: "AwaitingValidCredentials".into(),
            message: "Nothing is injected until Microsoft accepts the credentials.".into(),
            injected: vec![],
        });
    };

    // 3. Each target: plan, and apply only what differs.
    let mut problems: Vec<(&'static str, String)> = vec![];
    let mut injected: Vec<InjectedTarget> = vec![];
    for (idx, t) in mmi.spec.targets.iter().enumerate() {
        let matched: Vec<&Deployment> = all.iter().filter(|d| inject::selects(t, d)).collect();
        if matched.is_empty() {
            let what = t.deployment_name.as_deref().map_or_else(
                || "no Deployment matches the selector".to_owned(),
                |n| format!("Deployment {n} does not exist"),
            );
            problems.push((
                "TargetNotFound",
                format!("targets[{idx}]: {what} in namespace {ns}."),
            ));
            continue;
        }
        for dep in matched {
            match inject::plan(dep, t, &secret_name, &config_fp) {
                Err(p) => problems.push((p.reason, p.message)),
                Ok(plan) => {
                    if !plan.up_to_date {
                        let pp = PatchParams::apply(FIELD_MANAGER);
                        match deployments
                            .patch(&plan.deployment, &pp, &Patch::Apply(&plan.patch))
                            .await
                        {
                            Ok(_) => info!(deployment = %plan.deployment, "configuration injected"),
                            Err(kube::Error::Api(s)) if s.code == 409 => {
                                problems.push((
                                    "EnvConflict",
                                    format!("Deployment {}: another field manager owns the same fields: {}", plan.deployment, s.message),
                                ));
                                continue;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    injected.push(InjectedTarget {
                        deployment: plan.deployment,
                        containers: plan.containers,
                        fingerprint: config_fp.clone(),
                        rollout: t.rollout,
                    });
                }
            }
        }
    }
    injected.sort_by(|a, b| a.deployment.cmp(&b.deployment));
    injected.dedup_by(|a, b| a.deployment == b.deployment);
    if let Some((reason, _)) = problems.first() {
        let message = problems
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        return Ok(InjectionReport {
            status: ConditionStatus::False,
            reason: (*reason).into(),
            message,
            injected,
        });
    }
    let names: Vec<&str> = injected.iter().map(|i| i.deployment.as_str()).collect();
    let manual = injected.iter().any(|i| i.rollout == Rollout::Manual);
    Ok(InjectionReport {
        status: ConditionStatus::True,
        reason: "Injected".into(),
        message: format!(
            "The validated configuration is in Deployment(s) {} through Secret {secret_name}.{}{note}",
            names.join(", "),
            if manual {
                " Rollout is Manual for some targets: restart their pods yourself to pick up a change."
            } else {
                ""
            }
        ),
        injected,
    })
}

/// Reads the NocoBase API key from its Secret.
pub(super) async fn nocobase_client(
    mmi: &MicrosoftMailIntegration,
    nb: &NocoBaseSync,
    ctx: &Context,
) -> Result<Result<NocoBaseClient, (String, String)>, Error> {
    let ns = mmi.namespace().unwrap_or_default();
    let r = &nb.api_key_secret_ref;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(secret) = secrets.get_opt(&r.name).await? else {
        return Ok(Err((
            "ApiKeySecretNotFound".into(),
            format!(
                "Secret {ns}/{} with the NocoBase API key does not exist.",
                r.name
            ),
        )));
    };
    let Some(key) = secret.data.unwrap_or_default().remove(&r.key) else {
        return Ok(Err((
            "ApiKeySecretKeyNotFound".into(),
            format!(
                "Secret {ns}/{} has no key {} for the NocoBase API key.",
                r.name, r.key
            ),
        )));
    };
    let Ok(key) = String::from_utf8(key.0) else {
        return Ok(Err((
            "ApiKeyRejected".into(),
            format!(
                "The NocoBase API key in Secret {ns}/{} is not text.",
                r.name
            ),
        )));
    };
    let opts = NocoBaseOptions {
        observer: Some(ctx.metrics.request_observer()),
        http: Some(ctx.http.clone()),
        ..Default::default()
    };
    Ok(
        NocoBaseClient::new(&nb.url, SecretString::from(key), nb.app.clone(), opts)
            .map_err(|e| ("InvalidNocoBaseSettings".into(), e)),
    )
}

/// Writes the validated configuration into NocoBase's Variables and secrets. Only
/// credentials Microsoft accepted (or, opted in, not judged yet) are ever written.
async fn sync_nocobase(
    mmi: &MicrosoftMailIntegration,
    nb: &NocoBaseSync,
    ctx: &Context,
    previous: &MicrosoftMailIntegrationStatus,
    check: &CredentialCheck,
    creds: Option<&Credentials>,
    gate: Delivery,
) -> Result<NocoBaseReport, Error> {
    let state = previous.nocobase.clone().unwrap_or_default();
    let report = |status: ConditionStatus,
                  reason: &str,
                  message: String,
                  state: SyncedState,
                  writes: usize| {
        NocoBaseReport {
            status,
            reason: reason.into(),
            message,
            state,
            writes,
            retry_soon: false,
        }
    };
    let (CredentialCheck::Ready { .. }, Some(c)) = (check, creds) else {
        return Ok(report(
            ConditionStatus::Unknown,
            "AwaitingValidCredentials",
            "Nothing is written to NocoBase until Microsoft accepts the credentials.".into(),
            state,
            0,
        ));
    };
    if gate == Delivery::Withheld {
        let message = if state.variables.is_empty() {
            "Nothing is written to NocoBase until Microsoft accepts the credentials.".to_owned()
        } else {
            "The credentials now in the Secret are not confirmed by Microsoft; NocoBase keeps the previously validated ones.".to_owned()
        };
        let status = if state.variables.is_empty() {
            ConditionStatus::Unknown
        } else {
            ConditionStatus::True
        };
        return Ok(report(
            status,
            "AwaitingValidCredentials",
            message,
            state,
            0,
        ));
    }
    let client = match nocobase_client(mmi, nb, ctx).await? {
        Ok(c) => c,
        Err((reason, message)) => {
            return Ok(report(ConditionStatus::False, &reason, message, state, 0));
        }
    };
    let key = mmi.uid().unwrap_or_default();
    let v = &nb.variables;
    let desired = [
        DesiredVar::new(
            v.client_id.clone(),
            VarKind::Default,
            SecretString::from(c.client_id.clone()),
            key.as_bytes(),
        ),
        DesiredVar::new(
            v.tenant_id.clone(),
            VarKind::Default,
            SecretString::from(c.tenant_id.clone()),
            key.as_bytes(),
        ),
        DesiredVar::new(
            v.client_secret.clone(),
            VarKind::Secret,
            c.client_secret.clone(),
            key.as_bytes(),
        ),
    ];
    let out = nocobase::sync(&client, &desired, &state).await;
    if out.ok {
        if out.writes > 0 {
            info!(
                writes = out.writes,
                refreshed = out.refreshed,
                "NocoBase variables updated"
            );
        }
        let names = [
            v.client_id.as_str(),
            v.tenant_id.as_str(),
            v.client_secret.as_str(),
        ]
        .join(", ");
        Ok(report(
            ConditionStatus::True,
            "Synced",
            format!(
                "NocoBase holds the validated configuration in the variables {names} ({}).",
                nb.url
            ),
            out.state,
            out.writes,
        ))
    } else {
        warn!(reason = out.reason, "NocoBase sync failed");
        Ok(NocoBaseReport {
            retry_soon: out.transient,
            ..report(
                ConditionStatus::False,
                out.reason.unwrap_or("UnexpectedResponse"),
                out.message,
                out.state,
                out.writes,
            )
        })
    }
}

async fn release(deployments: &Api<Deployment>, ns: &str, name: &str) -> Result<(), Error> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    match deployments
        .patch(name, &pp, &Patch::Apply(&inject::release_patch(ns, name)))
        .await
    {
        Ok(_) => {
            info!(
                deployment = name,
                "removed the operator's env entries and annotation"
            );
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// On deletion: give back every Deployment field the operator owns. The managed Secret is
/// garbage-collected with its owner; the user's Secret is never touched.
async fn cleanup(mmi: &MicrosoftMailIntegration, ctx: &Context) -> Result<Action, Error> {
    let ns = mmi.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let mut names: Vec<String> = mmi
        .status
        .iter()
        .flat_map(|s| s.injected.iter().map(|i| i.deployment.clone()))
        .collect();
    for d in deployments.list(&ListParams::default()).await?.items {
        if mmi.spec.targets.iter().any(|t| inject::selects(t, &d)) {
            names.push(d.name_any());
        }
    }
    names.sort();
    names.dedup();
    for n in &names {
        release(&deployments, &ns, n).await?;
    }
    if let (Some(nb), Some(state)) = (
        &mmi.spec.nocobase,
        mmi.status.as_ref().and_then(|s| s.nocobase.as_ref()),
    ) && nb.delete_on_cleanup
    {
        match nocobase_client(mmi, nb, ctx).await? {
            Ok(client) => match nocobase::cleanup(&client, state, true).await {
                Ok(done) => {
                    info!(deleted = ?done.deleted, "deleted the operator's NocoBase variables")
                }
                // NocoBase gone for good must not hold the integration forever: say so and go on
                Err(e) => {
                    warn!(reason = e.reason, error = %e.message, "could not delete the operator's NocoBase variables; delete them by hand")
                }
            },
            Err((reason, message)) => warn!(
                reason,
                message, "could not delete the operator's NocoBase variables; delete them by hand"
            ),
        }
    }
    if let Some((nb, ms, state)) = super::mail::to_clear(mmi) {
        let client = nocobase_client(mmi, nb, ctx).await?;
        super::mail::cleanup_mail_settings(ms, state, client).await;
    }
    ctx.metrics.remove_integration(&ns, &mmi.name_any());
    info!(namespace = %ns, name = mmi.name_any(), released = names.len(), "integration deleted; Deployments restored");
    Ok(Action::await_change())
}
