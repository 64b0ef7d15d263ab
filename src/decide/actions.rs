//! The reconcile's pure core: from what was gathered, everything to do ([`plan`]: the
//! managed Secret, the Deployments to release and to apply, the NocoBase variables, the
//! email manager's settings); and, once it is done, what it means ([`conclude`]: the
//! injection, NocoBase and mail settings reports fed to [`super::decide`] for status,
//! Events and the requeue). Results only execution can know (a 409 from the API server,
//! NocoBase's answers, a missing API key) come back through [`Executed`], so no status,
//! reason or message is ever chosen by the I/O layer.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::records::{Delivery, acceptance, delivery, fold_attempt};
use super::reports::{self, MailWork, NocoBaseWork, Refusal};
use super::{ConditionStatus, CredentialCheck, Decision, InjectionReport, Inputs, decide};
use crate::api::{InjectedTarget, MicrosoftMailIntegration, MicrosoftMailIntegrationSpec, Rollout};
use crate::inject::{self, FINGERPRINT_ANNOTATION, PlanProblem};
use crate::input::Credentials;
use crate::mailsettings::MailOutcome;
use crate::microsoft::Verdict;
use crate::nocobase::SyncOutcome;

/// The managed Secret as gathered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Managed<'a> {
    /// No Secret under the managed name.
    Absent,
    /// The operator's own, with the configuration fingerprint it carries (if any).
    Own(Option<&'a str>),
    /// Somebody else's Secret under the managed name: never adopted nor overwritten.
    Foreign,
}

/// What the gather step read, for one integration.
pub struct Observed<'a> {
    pub mmi: &'a MicrosoftMailIntegration,
    /// Keys the fingerprints this integration's status and Deployments show.
    pub key: &'a crate::fingerprint::IntegrationKey,
    /// The spec decided on: `mmi.spec`, with the expiry date rotation knows standing in.
    pub spec: &'a MicrosoftMailIntegrationSpec,
    pub now: Timestamp,
    pub credentials: &'a CredentialCheck,
    pub creds: Option<&'a Credentials>,
    /// A validation made in this reconcile, if one was due.
    pub attempt: Option<&'a Verdict>,
    pub managed: Managed<'a>,
    /// The targeted and previously injected Deployments; `None` when not read
    /// ([`reads_deployments`]).
    pub deployments: Option<&'a [Deployment]>,
    /// Whether the operator honours `spec.injectUnverified` (`--allow-inject-unverified`):
    /// without it the spec alone cannot send an unconfirmed Secret into a Deployment.
    pub unverified_allowed: bool,
}

/// The managed Secret's apply. Holds the secret: no `Debug`, never logged.
pub struct ManagedWrite {
    pub body: Value,
    /// Forced only into the operator's own Secret: one created meanwhile by somebody else
    /// makes the apply conflict instead of taking it over.
    pub force: bool,
}

/// What to do with the targets.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// Somebody else's Secret holds the managed name: nothing is injected nor released.
    SecretConflict,
    /// No targets in the spec.
    None,
    /// Targets, but no configuration Microsoft accepted to give them; `unverified_refused`:
    /// `spec.injectUnverified` would have delivered them, but the operator does not allow it.
    Awaiting { unverified_refused: bool },
    /// One apply per Deployment (those up to date are not sent), and what could not be
    /// planned.
    Apply {
        plans: Vec<inject::Plan>,
        problems: Vec<PlanProblem>,
        fingerprint: String,
    },
}

/// Everything one reconcile does, decided before anything is written.
pub struct Actions {
    /// The managed Secret's apply, when it must change.
    pub managed_secret: Option<ManagedWrite>,
    /// Deployments injected before, still there and no longer targeted: given back.
    pub releases: Vec<String>,
    /// Deployments injected before that were deleted since.
    pub disappeared: Vec<String>,
    pub targets: Targets,
    /// `None` without `spec.nocobase`.
    pub nocobase: Option<NocoBaseWork>,
    /// `None` unless `spec.nocobase.mailSettings.enabled`.
    pub mail_settings: Option<MailWork>,
    /// Said after the injection message (unverified, or the previous configuration kept).
    pub note: &'static str,
}

/// What only execution could learn.
#[derive(Default)]
pub struct Executed {
    /// Plans (by index in [`Targets::Apply`]) the API server refused with 409, and its
    /// message.
    pub conflicts: Vec<(usize, String)>,
    /// The NocoBase sync's outcome, or why no request was made (API key, allow-list).
    pub nocobase: Option<Result<SyncOutcome, Refusal>>,
    /// The email manager's settings sync outcome, or why no request was made.
    pub mail_settings: Option<Result<MailOutcome, Refusal>>,
}

const UNVERIFIED_NOTE: &str = " Microsoft could not confirm these credentials yet; they were injected because injectUnverified is set.";
/// Reason of `Injected` when `spec.injectUnverified` asks for what the operator does not allow.
pub const INJECT_UNVERIFIED_NOT_ALLOWED: &str = "InjectUnverifiedNotAllowed";
const UNVERIFIED_REFUSED_MESSAGE: &str = "Microsoft could not confirm these credentials yet, and spec.injectUnverified is set, but this operator does not inject unconfirmed credentials: its administrator has not allowed it (--allow-inject-unverified, Helm value injectUnverified.allowed). Nothing is injected until Microsoft accepts the credentials.";
const KEPT_NOTE: &str = " The credentials now in the Secret are not confirmed by Microsoft, so the previously validated configuration stays in place.";

/// The managed Secret as read: absent, the operator's own (created for this integration),
/// or somebody else's.
pub fn managed<'a>(mmi: &MicrosoftMailIntegration, secret: Option<&'a Secret>) -> Managed<'a> {
    match secret {
        None => Managed::Absent,
        Some(s) if !inject::is_own_managed_secret(&s.metadata, &mmi.uid().unwrap_or_default()) => {
            Managed::Foreign
        }
        Some(s) => Managed::Own(
            s.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(FINGERPRINT_ANNOTATION))
                .map(String::as_str),
        ),
    }
}

/// Whether the gather step reads Deployments: something is or was targeted, and the
/// managed Secret is not somebody else's (then nothing is injected nor released).
pub fn reads_deployments(mmi: &MicrosoftMailIntegration, managed: Managed<'_>) -> bool {
    let before = mmi.status.as_ref().is_some_and(|s| !s.injected.is_empty());
    managed != Managed::Foreign && (!mmi.spec.targets.is_empty() || before)
}

/// The names of the Deployments injected before (status).
pub fn injected_before(mmi: &MicrosoftMailIntegration) -> Vec<String> {
    mmi.status
        .iter()
        .flat_map(|s| s.injected.iter().map(|i| i.deployment.clone()))
        .collect()
}

/// Whether the credentials now in the Secret may be delivered: Microsoft's acceptance,
/// folding this reconcile's attempt over what status remembers, and the opt-in. Asked
/// once, for every writer.
pub fn gate(o: &Observed<'_>) -> Delivery {
    gate_with(o, o.unverified_allowed)
}

fn gate_with(o: &Observed<'_>, unverified_allowed: bool) -> Delivery {
    let previous = o.mmi.status.clone().unwrap_or_default();
    o.credentials
        .fingerprint()
        .map_or(Delivery::Withheld, |fp| {
            let records = fold_attempt(&previous, Some(fp), o.attempt, o.now);
            delivery(&o.mmi.spec, acceptance(&records, fp), unverified_allowed)
        })
}

/// The spec asks for unverified delivery and it would apply now, but the operator does not
/// allow it: said, so that the author learns why nothing arrives.
fn unverified_refused(o: &Observed<'_>) -> bool {
    !o.unverified_allowed && gate_with(o, true) == Delivery::Unverified
}

/// Everything to do, from what was gathered. Pure.
pub fn plan(o: &Observed<'_>) -> Actions {
    let gate = gate(o);
    let (managed_secret, config, note) = managed_secret(o, gate);
    let mut actions = Actions {
        managed_secret,
        releases: vec![],
        disappeared: vec![],
        targets: Targets::None,
        nocobase: o
            .mmi
            .spec
            .nocobase
            .as_ref()
            .map(|nb| reports::nocobase_work(o.mmi, o.key, nb, o.credentials, o.creds, gate)),
        mail_settings: reports::mail_work(o.mmi, o.credentials, o.creds, gate),
        note,
    };
    if o.managed == Managed::Foreign {
        actions.targets = Targets::SecretConflict;
        return actions;
    }
    let Some(all) = o.deployments else {
        // nothing targeted now or before
        return actions;
    };
    let targets = &o.mmi.spec.targets;
    (actions.releases, actions.disappeared) =
        inject::released_targets(&injected_before(o.mmi), targets, all);
    actions.targets = match config {
        _ if targets.is_empty() => Targets::None,
        None => Targets::Awaiting {
            unverified_refused: unverified_refused(o),
        },
        Some(fingerprint) => {
            let ns = o.mmi.namespace().unwrap_or_default();
            let secret = inject::managed_secret_name(&o.mmi.name_any());
            let (plans, problems) = inject::plan_targets(targets, all, &ns, &secret, &fingerprint);
            Targets::Apply {
                plans,
                problems,
                fingerprint,
            }
        }
    };
    actions
}

/// The managed Secret: written only with credentials Microsoft accepted (or, opted in,
/// not yet judged because Microsoft was unreachable); never with rejected ones. Gives the
/// apply (when the configuration changes), the configuration the targets then receive,
/// and the note for the injection message.
fn managed_secret(
    o: &Observed<'_>,
    gate: Delivery,
) -> (Option<ManagedWrite>, Option<String>, &'static str) {
    let current = match o.managed {
        Managed::Own(fp) => fp.map(str::to_owned),
        Managed::Absent | Managed::Foreign => None,
    };
    let (Some(fp), Some(c)) = (o.credentials.fingerprint(), o.creds) else {
        return (None, current, "");
    };
    if o.managed == Managed::Foreign {
        return (None, None, "");
    }
    if gate == Delivery::Withheld {
        let note = if current.is_some() { KEPT_NOTE } else { "" };
        return (None, current, note);
    }
    let note = if gate == Delivery::Unverified {
        UNVERIFIED_NOTE
    } else {
        ""
    };
    if current.as_deref() == Some(fp) {
        return (None, current, note);
    }
    let secret = c.client_secret.expose_secret();
    let body = inject::managed_secret(o.mmi, &c.client_id, &c.tenant_id, secret, fp);
    let write = ManagedWrite {
        body,
        force: o.managed != Managed::Absent,
    };
    (Some(write), Some(fp.to_owned()), note)
}

/// What the targets now carry, from the plan and the 409s execution met.
pub fn injection_report(
    mmi: &MicrosoftMailIntegration,
    a: &Actions,
    conflicts: &[(usize, String)],
) -> InjectionReport {
    let disappeared = a.disappeared.clone();
    let (plans, problems, fingerprint) = match &a.targets {
        Targets::SecretConflict => {
            let ns = mmi.namespace().unwrap_or_default();
            let secret = inject::managed_secret_name(&mmi.name_any());
            return InjectionReport {
                status: ConditionStatus::False,
                reason: "ManagedSecretConflict".into(),
                message: inject::managed_secret_conflict(&ns, &secret),
                injected: mmi
                    .status
                    .as_ref()
                    .map(|s| s.injected.clone())
                    .unwrap_or_default(),
                disappeared: vec![],
            };
        }
        Targets::None => {
            return InjectionReport {
                disappeared,
                ..InjectionReport::no_targets()
            };
        }
        Targets::Awaiting { unverified_refused } => {
            let (reason, message) = if *unverified_refused {
                (INJECT_UNVERIFIED_NOT_ALLOWED, UNVERIFIED_REFUSED_MESSAGE)
            } else {
                (
                    "AwaitingValidCredentials",
                    "Nothing is injected until Microsoft accepts the credentials.",
                )
            };
            return InjectionReport {
                status: ConditionStatus::False,
                reason: reason.into(),
                message: message.into(),
                injected: vec![],
                disappeared,
            };
        }
        Targets::Apply {
            plans,
            problems,
            fingerprint,
        } => (plans, problems, fingerprint),
    };
    let mut problems = problems.clone();
    let mut injected = vec![];
    for (idx, plan) in plans.iter().enumerate() {
        if let Some((_, m)) = conflicts.iter().find(|(at, _)| *at == idx) {
            problems.push(PlanProblem {
                reason: "EnvConflict",
                message: format!(
                    "Deployment {}: another field manager owns the same fields: {m}",
                    plan.deployment
                ),
            });
            continue;
        }
        injected.push(InjectedTarget {
            deployment: plan.deployment.clone(),
            containers: plan.containers.clone(),
            fingerprint: fingerprint.clone(),
            rollout: plan.rollout,
        });
    }
    summarize(mmi, &problems, injected, disappeared, a.note)
}

fn summarize(
    mmi: &MicrosoftMailIntegration,
    problems: &[PlanProblem],
    injected: Vec<InjectedTarget>,
    disappeared: Vec<String>,
    note: &str,
) -> InjectionReport {
    let gone = if disappeared.is_empty() {
        String::new()
    } else {
        format!(
            " Deployment(s) {} received the configuration before and were deleted since.",
            crate::quote::list(&disappeared, ", ")
        )
    };
    if let Some(first) = problems.first() {
        // one sentence per problem, at most the first few (a selector may match hundreds)
        let shown = problems.iter().take(crate::quote::MAX_LISTED);
        let mut message: Vec<String> = shown.map(|p| p.message.clone()).collect();
        if problems.len() > crate::quote::MAX_LISTED {
            let more = problems.len() - crate::quote::MAX_LISTED;
            message.push(format!("And {more} more problem(s)."));
        }
        return InjectionReport {
            status: ConditionStatus::False,
            reason: first.reason.into(),
            message: format!("{}{gone}", message.join(" ")),
            injected,
            disappeared,
        };
    }
    let names: Vec<&str> = injected.iter().map(|i| i.deployment.as_str()).collect();
    let manual = if injected.iter().any(|i| i.rollout == Rollout::Manual) {
        " Rollout is Manual for some targets: restart their pods yourself to pick up a change."
    } else {
        ""
    };
    InjectionReport {
        status: ConditionStatus::True,
        reason: "Injected".into(),
        message: format!(
            "The validated configuration is in Deployment(s) {} through Secret {}.{manual}{note}{gone}",
            crate::quote::list(&names, ", "),
            inject::managed_secret_name(&mmi.name_any()),
        ),
        injected,
        disappeared,
    }
}

/// Status, Events and the requeue, from what was gathered, planned and executed. Pure.
pub fn conclude(o: &Observed<'_>, a: &Actions, done: &Executed) -> Decision {
    let injection = injection_report(o.mmi, a, &done.conflicts);
    let nocobase = a
        .nocobase
        .as_ref()
        .map(|w| reports::nocobase_report(o.mmi, w, done.nocobase.as_ref()));
    let mail = a
        .mail_settings
        .as_ref()
        .map(|w| reports::mail_report(o.mmi, w, done.mail_settings.as_ref()));
    let previous = o.mmi.status.clone().unwrap_or_default();
    let mut d = decide(&Inputs {
        spec: o.spec,
        generation: o.mmi.metadata.generation,
        previous: &previous,
        now: o.now,
        credentials: o.credentials,
        attempt: o.attempt,
        injection: &injection,
        nocobase: nocobase.as_ref(),
        mail_settings: mail.as_ref(),
    });
    // a NocoBase that is down or restarting is asked again soon, not at the next validation
    if let Some(soon) = nocobase.as_ref().and_then(|nb| nb.retry_after) {
        d.requeue_after = d.requeue_after.min(soon);
    }
    // the email manager's settings, likewise
    if let Some(soon) = mail.as_ref().and_then(|m| m.retry_after) {
        d.requeue_after = d.requeue_after.min(soon);
    }
    d
}
