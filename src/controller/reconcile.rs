//! The reconciler: Kubernetes, Microsoft and NocoBase I/O around the pure core, in four
//! steps. **Gather** reads what the decision needs (the Secret, Microsoft's answer when a
//! validation is due, the managed Secret, the targeted Deployments); **decide** is
//! [`actions::plan`], pure; **execute** carries the plan out ([`execute`] for Kubernetes,
//! [`nocobase`] for NocoBase); **record** ([`record`]) writes status and Events from
//! [`actions::conclude`], pure, which also reads what only execution could know (a 409,
//! NocoBase's answers). No status, reason or message is chosen here.

pub mod execute;
pub mod nocobase;
pub mod record;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use tracing::{Instrument, debug, info, info_span, warn};

use super::backoff::ErrorBackoff;
use super::index::OwnWrites;
use super::validations::ValidationCache;
use crate::api::{MicrosoftMailIntegration, MicrosoftMailIntegrationSpec};
use crate::decide::actions::{self, Executed, Observed};
use crate::decide::{CredentialCheck, interval, validation_due};
use crate::inject;
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
    /// The I/O budget of a reconcile and the reconciles allowed at once per endpoint.
    pub limits: super::limits::Limits,
    /// Every controller's index, for questions about all watched namespaces.
    pub indexes: super::index::Indexes,
    /// Keys every fingerprint an integration's status or Deployments show.
    pub fingerprint_key: crate::fingerprint::OperatorKey,
}

impl Context {
    /// The key of `mmi`'s fingerprints.
    pub fn key_of(&self, mmi: &MicrosoftMailIntegration) -> crate::fingerprint::IntegrationKey {
        self.fingerprint_key
            .integration(&crate::fingerprint::integration_id(mmi))
    }
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
    // an endpoint already busy with its share of reconciles: no I/O now, and no slot held
    // while waiting for it (other endpoints' integrations keep theirs)
    let key = super::limits::endpoint_key(&mmi);
    let Some(_permit) = ctx.limits.try_acquire(key.clone()) else {
        let jitter = Duration::from_millis(rand::random_range(0..1000));
        debug!(namespace = %ns, name = %name, endpoint = key.as_deref(), "endpoint busy; reconciling a moment later");
        return Ok(Action::requeue(super::limits::BUSY_RETRY + jitter));
    };
    let budget = ctx.limits.io_deadline;
    crate::http::with_io_deadline(budget, reconcile_now(mmi, ctx, ns, name)).await
}

/// One reconcile, within its I/O budget and its endpoint's limit.
async fn reconcile_now(
    mmi: Arc<MicrosoftMailIntegration>,
    ctx: Arc<Context>,
    ns: String,
    name: String,
) -> Result<Action, Error> {
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
    .or_else(|e| finalizer_outcome(e, &ns, &name));
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.error_backoff.reset(&format!("{ns}/{name}"));
    }
    result
}

/// How long a reconcile of a stale copy waits before it runs again (by then the watch has
/// brought the current object).
const STALE_COPY_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// The finalizer helper's errors. Two are not failures, and neither is logged as one: a
/// refused patch (422: kube-runtime's JSON patch tests `/metadata/finalizers` against the
/// copy it was given, and the cache can still hold the copy from before this operator's own
/// finalizer write when a Secret or Deployment event triggers a reconcile, as the initial
/// lists do at start) is retried shortly; a removal that finds the object gone (404: a
/// late trigger with the cached deleting copy) means the deletion is done.
fn finalizer_outcome(
    e: kube::runtime::finalizer::Error<Error>,
    ns: &str,
    name: &str,
) -> Result<Action, Error> {
    use kube::runtime::finalizer::Error as F;
    let code = |e: &kube::Error| match e {
        kube::Error::Api(s) => s.code,
        _ => 0,
    };
    match e {
        F::ApplyFailed(e) | F::CleanupFailed(e) => Err(e),
        F::RemoveFinalizer(e) if code(&e) == 404 => {
            tracing::debug!(namespace = %ns, name = %name, "finalizer: the object is already gone");
            Ok(Action::await_change())
        }
        F::AddFinalizer(e) | F::RemoveFinalizer(e) if code(&e) == 422 => {
            tracing::debug!(namespace = %ns, name = %name, "finalizer: a stale copy of the object; retrying");
            Ok(Action::requeue(STALE_COPY_RETRY))
        }
        other => Err(Error::Finalizer(other.to_string())),
    }
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

fn now(ctx: &Context) -> Timestamp {
    crate::clock::now_seconds(&ctx.clock)
}

/// What the gather step read. The secret's value lives only in `creds`.
struct Gathered {
    check: CredentialCheck,
    creds: Option<Credentials>,
    /// Whether the integration's hosts are in the allow-lists.
    allowed: bool,
    attempt: Option<Verdict>,
    spec: MicrosoftMailIntegrationSpec,
    managed: Option<Secret>,
    deployments: Option<Vec<k8s_openapi::api::apps::v1::Deployment>>,
}

impl Gathered {
    fn observed<'a>(
        &'a self,
        mmi: &'a MicrosoftMailIntegration,
        now: Timestamp,
        allow: &crate::allow::AllowList,
        key: &'a crate::fingerprint::IntegrationKey,
    ) -> Observed<'a> {
        Observed {
            mmi,
            key,
            spec: &self.spec,
            now,
            credentials: &self.check,
            creds: self.creds.as_ref(),
            attempt: self.attempt.as_ref(),
            managed: actions::managed(mmi, self.managed.as_ref()),
            deployments: self.deployments.as_deref(),
            unverified_allowed: allow.inject_unverified(),
        }
    }
}

async fn apply(original: &MicrosoftMailIntegration, ctx: &Context) -> Result<Action, Error> {
    let now = now(ctx);
    let key = ctx.key_of(original);
    let read = read_credentials(original, ctx, &key).await?;
    // decided on with the status re-keyed; recorded against the status as it was read, so
    // that the re-keyed fingerprints are written
    let mmi = &read.rekeyed(original);
    let gathered = gather(mmi, ctx, read, now).await?;
    let observed = gathered.observed(mmi, now, &ctx.allow, &key);
    let plan = actions::plan(&observed);
    let mut done = Executed::default();
    execute::kubernetes(mmi, ctx, &plan, &mut done).await?;
    nocobase::execute(mmi, ctx, &plan, &mut done).await?;
    let mut decision = actions::conclude(&observed, &plan, &done);
    execute::rotation(mmi, ctx, &mut decision, gathered.allowed, now).await?;
    record::record(original, ctx, &decision).await?;
    Ok(Action::requeue(decision.requeue_after))
}

/// The credentials as read from the Secret (or why not), before anything is decided.
struct Read {
    check: CredentialCheck,
    creds: Option<Credentials>,
    /// Whether the integration's hosts are in the allow-lists.
    allowed: bool,
    rekey: Vec<crate::decide::rekey::Rekeyed>,
}

impl Read {
    /// `mmi` with its status re-keyed ([`crate::decide::rekey`]); borrowed when nothing in it
    /// was keyed the legacy way.
    fn rekeyed<'a>(
        &self,
        mmi: &'a MicrosoftMailIntegration,
    ) -> std::borrow::Cow<'a, MicrosoftMailIntegration> {
        let status = mmi.status.as_ref();
        match status.and_then(|s| crate::decide::rekey::rekey(s, &self.rekey)) {
            None => std::borrow::Cow::Borrowed(mmi),
            Some(s) => {
                debug!("fingerprints keyed by the UID found in status; re-keyed");
                let mut m = mmi.clone();
                m.status = Some(s);
                std::borrow::Cow::Owned(m)
            }
        }
    }
}

/// Reads the Secret the integration names, only for an integration the operator serves.
async fn read_credentials(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    key: &crate::fingerprint::IntegrationKey,
) -> Result<Read, Error> {
    // Before the Secret is read: an integration the operator will not serve (a host
    // outside the allow-lists, ...) learns nothing about it, not even its key names.
    let allowed = crate::allow::check_resource(&mmi.name_any(), &mmi.spec, &ctx.allow);
    if let Err(p) = &allowed {
        let (reason, message) = (p.reason.into(), p.message.clone());
        let check = CredentialCheck::Problem { reason, message };
        let (creds, rekey) = (None, vec![]);
        return Ok(Read {
            check,
            creds,
            allowed: false,
            rekey,
        });
    }
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &mmi.namespace().unwrap_or_default());
    let secret = secrets.get_opt(&mmi.spec.client_secret_ref.name).await?;
    let (check, creds) = crate::credentials::check(mmi, secret.as_ref(), key);
    let rekey = crate::decide::rekey::pairs(mmi, secret.as_ref(), creds.as_ref(), key);
    Ok(Read {
        check,
        creds,
        allowed: true,
        rekey,
    })
}

/// Reads what the decision needs besides the credentials, and asks Microsoft only when a
/// validation is due.
async fn gather(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    read: Read,
    now: Timestamp,
) -> Result<Gathered, Error> {
    let ns = mmi.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let Read {
        check,
        creds,
        allowed,
        ..
    } = read;
    let attempt = validate_if_due(mmi, ctx, &check, creds.as_ref(), now).await;
    let managed = secrets
        .get_opt(&inject::managed_secret_name(&mmi.name_any()))
        .await?;
    let deployments = if actions::reads_deployments(mmi, actions::managed(mmi, managed.as_ref())) {
        Some(execute::targeted_deployments(mmi, ctx).await?)
    } else {
        None
    };
    Ok(Gathered {
        spec: super::rotate::effective_spec(mmi, creds.as_ref(), &ctx.key_of(mmi)),
        check,
        creds,
        allowed,
        attempt,
        managed,
        deployments,
    })
}

/// Asks Microsoft when a validation is due (through the shared validation cache).
async fn validate_if_due(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    check: &CredentialCheck,
    creds: Option<&Credentials>,
    now: Timestamp,
) -> Option<Verdict> {
    let previous = mmi.status.clone().unwrap_or_default();
    let (CredentialCheck::Ready { fingerprint }, Some(c)) = (check, creds) else {
        return None;
    };
    // `Some(wait)`: not due yet
    if validation_due(&mmi.spec, &previous, fingerprint, now).is_some() {
        return None;
    }
    let discover = mmi.spec.secret_expiry.discover_from_graph;
    let max_age = interval(&mmi.spec).unsigned_abs();
    let v = ctx.validations.validate(c, discover, max_age).await;
    info!(
        outcome = v.outcome.as_str(),
        reason = v.reason,
        aadsts = v.aadsts_code,
        "validated with Microsoft"
    );
    Some(v)
}

/// Whether namespace `ns` is being deleted (or gone).
async fn terminating(ctx: &Context, ns: &str) -> bool {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ctx.client.clone());
    match api.get_opt(ns).await {
        Ok(n) => n.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        Err(_) => false,
    }
}

/// On deletion: give back every Deployment field the operator owns. The managed Secret is
/// garbage-collected with its owner; the user's Secret is never touched. NocoBase's
/// variables and the email manager's fields were cleaned up before
/// ([`nocobase::cleanup_nocobase`]), when opted in.
async fn cleanup(mmi: &MicrosoftMailIntegration, ctx: &Context) -> Result<Action, Error> {
    let ns = mmi.namespace().unwrap_or_default();
    let deployments = Api::namespaced(ctx.client.clone(), &ns);
    let all = match execute::targeted_deployments(mmi, ctx).await {
        Ok(all) => all,
        // a watched namespace being deleted takes its Roles with it: nothing in it can be
        // read any more, and nothing needs giving back (its Deployments go too)
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 403 && terminating(ctx, &ns).await => {
            info!(namespace = %ns, "namespace being deleted; nothing to give back");
            vec![]
        }
        Err(e) => return Err(e),
    };
    // only Deployments that exist: a deleted one (or a namespace being deleted) has
    // nothing left to give back, and must never hold the deletion up; and only those this
    // integration injected (status says so, or its own field manager holds fields there):
    // a target another integration serves is never touched
    let manager = inject::field_manager(&ns, &mmi.name_any());
    let names = inject::holding(&actions::injected_before(mmi), &manager, &all);
    for n in &names {
        execute::release(&deployments, mmi, n, &ctx.own_writes).await?;
    }
    ctx.metrics.remove_integration(&ns, &mmi.name_any());
    info!(namespace = %ns, name = mmi.name_any(), released = names.len(), "integration deleted; Deployments restored");
    Ok(Action::await_change())
}
