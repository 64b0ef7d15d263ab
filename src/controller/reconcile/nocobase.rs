//! The NocoBase side of a reconcile: the sync of the validated credentials into NocoBase's
//! Variables and secrets (as a report for the decision core), and the deletion of the
//! operator's variables when the integration goes away (`deleteOnCleanup`), retried while
//! NocoBase is down or restarting for at most `spec.nocobase.cleanupTimeout`.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use secrecy::SecretString;
use serde_json::json;
use tracing::{info, warn};

use super::{Context, Error, FINALIZER, now};
use crate::api::{MicrosoftMailIntegration, MicrosoftMailIntegrationStatus, NocoBaseSync};
use crate::decide::{ConditionStatus, CredentialCheck, Delivery, NocoBaseReport};
use crate::inject::FIELD_MANAGER;
use crate::input::Credentials;
use crate::nocobase::{
    self, CleanupWait, DesiredVar, NocoBaseClient, NocoBaseOptions, SyncedState, VarKind, reason,
};

/// How soon a NocoBase that is restarting is asked again (it takes 1 to 15 s).
pub const RESTARTING_RETRY: Duration = Duration::from_secs(5);
/// How soon a NocoBase that is down or failing is asked again.
pub const UNREACHABLE_RETRY: Duration = Duration::from_secs(30);

/// Reads the NocoBase API key from its Secret and builds the client.
pub(in crate::controller) async fn nocobase_client(
    mmi: &MicrosoftMailIntegration,
    nb: &NocoBaseSync,
    ctx: &Context,
) -> Result<Result<NocoBaseClient, (String, String)>, Error> {
    let ns = mmi.namespace().unwrap_or_default();
    let r = &nb.api_key_secret_ref;
    // Checked before the API key is even read: no request to a URL outside the list.
    if let Err(p) = ctx.allow.check(crate::allow::Endpoint::NocoBase, &nb.url) {
        return Ok(Err((p.reason.into(), p.message)));
    }
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
            reason::API_KEY_REJECTED.into(),
            format!(
                "The NocoBase API key in Secret {ns}/{} is not text.",
                r.name
            ),
        )));
    };
    let opts = NocoBaseOptions {
        observer: Some(ctx.metrics.nocobase_request_observer()),
        http: Some(ctx.http.clone()),
        ..Default::default()
    };
    Ok(
        NocoBaseClient::new(&nb.url, SecretString::from(key), nb.app.clone(), opts)
            .map_err(|e| ("InvalidNocoBaseSettings".into(), e)),
    )
}

fn report(
    status: ConditionStatus,
    reason: &str,
    message: String,
    state: SyncedState,
    writes: usize,
) -> NocoBaseReport {
    NocoBaseReport {
        status,
        reason: reason.into(),
        message,
        state,
        writes,
        retry_after: None,
    }
}

/// What NocoBase still holds from the operator's last write, by name and hint only
/// ("MICROSOFT_CLIENT_SECRET (starts with Gq7)"), or `None` when nothing was written.
pub fn holdings(nb: &NocoBaseSync, state: &SyncedState) -> Option<String> {
    if state.variables.is_empty() {
        return None;
    }
    let names: Vec<String> = state
        .variables
        .iter()
        .map(|(name, v)| match &v.hint {
            Some(h) => format!("{name} (starts with {h})"),
            None => name.clone(),
        })
        .collect();
    Some(format!(
        "NocoBase at {} still holds the values the operator last wrote there: {}",
        nb.url,
        names.join(", ")
    ))
}

/// Writes the validated configuration into NocoBase's Variables and secrets. Only
/// credentials Microsoft accepted (or, opted in, not judged yet) are ever written.
pub async fn sync_nocobase(
    mmi: &MicrosoftMailIntegration,
    nb: &NocoBaseSync,
    ctx: &Context,
    previous: &MicrosoftMailIntegrationStatus,
    check: &CredentialCheck,
    creds: Option<&Credentials>,
    gate: Delivery,
) -> Result<NocoBaseReport, Error> {
    let state = previous.nocobase.clone().unwrap_or_default();
    let (CredentialCheck::Ready { .. }, Some(c)) = (check, creds) else {
        let reason = match check {
            CredentialCheck::Problem { reason, .. } => reason.as_str(),
            CredentialCheck::Ready { .. } => "AwaitingValidCredentials",
        };
        let why = format!("The credentials cannot be read ({reason}), so nothing new is written.");
        return Ok(nothing_new(nb, why, state));
    };
    if gate == Delivery::Withheld {
        let why = "The credentials now in the Secret are not confirmed by Microsoft, so nothing new is written.";
        return Ok(nothing_new(nb, why.into(), state));
    }
    let client = match nocobase_client(mmi, nb, ctx).await? {
        Ok(c) => c,
        Err((reason, message)) => {
            return Ok(report(ConditionStatus::False, &reason, message, state, 0));
        }
    };
    let out = nocobase::sync(&client, &desired(mmi, nb, c), &state).await;
    if out.ok {
        if out.writes > 0 {
            info!(
                writes = out.writes,
                refreshed = out.refreshed,
                "NocoBase variables updated"
            );
        }
        let v = &nb.variables;
        let names = [&v.client_id, &v.tenant_id, &v.client_secret].map(String::as_str);
        let message = format!(
            "NocoBase holds the validated configuration in the variables {} ({}).",
            names.join(", "),
            nb.url
        );
        return Ok(report(
            ConditionStatus::True,
            "Synced",
            message,
            out.state,
            out.writes,
        ));
    }
    let failed = out.reason.unwrap_or(reason::UNEXPECTED_RESPONSE);
    warn!(reason = failed, "NocoBase sync failed");
    if failed == reason::NOCOBASE_RESTARTING {
        return Ok(restarting(previous, out.message, out.state, out.writes));
    }
    Ok(NocoBaseReport {
        retry_after: out.transient.then_some(UNREACHABLE_RETRY),
        ..report(
            ConditionStatus::False,
            failed,
            out.message,
            out.state,
            out.writes,
        )
    })
}

/// Nothing new may be written (credentials unreadable or not confirmed): NocoBase keeps
/// what it has, and the condition says what that is, by name and hint.
fn nothing_new(nb: &NocoBaseSync, why: String, state: SyncedState) -> NocoBaseReport {
    match holdings(nb, &state) {
        Some(h) => report(
            ConditionStatus::True,
            "AwaitingValidCredentials",
            format!("{why} {h}; they stay until valid credentials replace them."),
            state,
            0,
        ),
        None => report(
            ConditionStatus::Unknown,
            "AwaitingValidCredentials",
            "Nothing is written to NocoBase until Microsoft accepts the credentials.".into(),
            state,
            0,
        ),
    }
}

/// NocoBase is reloading: the condition keeps its status and, when False, its reason
/// ([`crate::decide::while_restarting`]). Asked again within seconds.
fn restarting(
    previous: &MicrosoftMailIntegrationStatus,
    message: String,
    state: SyncedState,
    writes: usize,
) -> NocoBaseReport {
    let t = crate::api::condition::NOCOBASE_SYNCED;
    let c = crate::decide::while_restarting(&previous.conditions, t, &message);
    NocoBaseReport {
        status: c.status,
        reason: c.reason,
        message: c.message,
        state,
        writes,
        retry_after: Some(RESTARTING_RETRY),
    }
}

fn desired(mmi: &MicrosoftMailIntegration, nb: &NocoBaseSync, c: &Credentials) -> [DesiredVar; 3] {
    let key = mmi.uid().unwrap_or_default();
    let v = &nb.variables;
    [
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
    ]
}

/// On deletion, before the finalizer goes: deletes the variables the operator owns
/// (`deleteOnCleanup`) and empties the email manager's fields it wrote (`clearOnCleanup`).
/// `Some(action)` while it waits for a NocoBase that is down, restarting or overloaded (the
/// finalizer stays); `None` when done, when there is nothing to do, or when it gave up (an
/// answer that can never succeed, or `cleanupTimeout` passed), each give-up with a Warning
/// Event naming what is left behind.
pub async fn cleanup_nocobase(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
) -> Result<Option<Action>, Error> {
    let deleting =
        mmi.meta().deletion_timestamp.is_some() && mmi.finalizers().iter().any(|f| f == FINALIZER);
    let Some(nb) = mmi.spec.nocobase.as_ref().filter(|_| deleting) else {
        return Ok(None);
    };
    let vars = mmi
        .status
        .as_ref()
        .and_then(|s| s.nocobase.as_ref())
        .filter(|s| nb.delete_on_cleanup && !s.owned.is_empty());
    let mail = super::super::mail::to_clear(mmi);
    let left = leftovers(vars, mail.map(|(_, _, st)| st));
    if left.is_empty() {
        return Ok(None);
    }
    let client = match nocobase_client(mmi, nb, ctx).await? {
        Ok(c) => c,
        Err((reason, message)) => {
            give_up(
                ctx,
                mmi,
                &reason,
                &format!(
                    "{message} The operator cannot clean up {}; do it by hand in NocoBase.",
                    left.join(" and ")
                ),
            )
            .await;
            return Ok(None);
        }
    };
    let mut waiting = None;
    if let Some(state) = vars {
        let e = match nocobase::cleanup(&client, state, true).await {
            Ok(done) => {
                info!(deleted = ?done.deleted, "deleted the operator's NocoBase variables");
                None
            }
            Err(e) => Some(e),
        };
        waiting = settle_cleanup(ctx, mmi, e, &left[0]).await;
    }
    if let Some((_, ms, state)) = mail {
        let e = match crate::mailsettings::cleanup(&client, ms, state).await {
            Ok(cleared) => {
                info!(fields = ?cleared, "emptied the email manager's settings the operator wrote");
                None
            }
            Err(e) => Some(e),
        };
        let what = left.last().expect("mail settings are listed");
        waiting = waiting.or(settle_cleanup(ctx, mmi, e, what).await);
    }
    match waiting {
        Some(e) => wait_for_cleanup(mmi, ctx, nb, &e, &left.join(" and ")).await,
        None => Ok(None),
    }
}

/// What the cleanup has to remove, in words for Events: the variables, the mail settings.
fn leftovers(
    vars: Option<&SyncedState>,
    mail: Option<&crate::mailsettings::MailSettingsStatus>,
) -> Vec<String> {
    let mut out = vec![];
    if let Some(v) = vars {
        out.push(format!(
            "its NocoBase variables {} (Settings > Variables and secrets)",
            v.owned.join(", ")
        ));
    }
    if let Some(m) = mail.filter(|m| !m.fields.is_empty()) {
        let fields: Vec<&str> = m.fields.keys().map(String::as_str).collect();
        out.push(format!(
            "the email manager's fields {} in record {} of {} (the Email settings page)",
            fields.join(", "),
            m.record,
            m.collection
        ));
    }
    out
}

/// One cleanup step's error: a transient one is returned to wait for; any other is given
/// up at once with a Warning Event, as it does not change by waiting.
async fn settle_cleanup(
    ctx: &Context,
    mmi: &MicrosoftMailIntegration,
    e: Option<nocobase::SyncError>,
    what: &str,
) -> Option<nocobase::SyncError> {
    let e = e?;
    if e.transient {
        return Some(e);
    }
    give_up(ctx, mmi, e.reason, &format!("{} The operator gives up removing {what}: this answer does not change by waiting. Remove it by hand.", e.message)).await;
    None
}

/// A transient failure during cleanup: retry with growing pauses until `cleanupTimeout`,
/// counted from `status.nocobase.cleanupWaitingSince` so that a restart does not reset it.
async fn wait_for_cleanup(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    nb: &NocoBaseSync,
    e: &nocobase::SyncError,
    left: &str,
) -> Result<Option<Action>, Error> {
    let now = now(ctx);
    let since = mmi
        .status
        .as_ref()
        .and_then(|s| s.nocobase.as_ref())
        .and_then(|s| s.cleanup_waiting_since.as_deref())
        .and_then(|s| s.parse::<Timestamp>().ok());
    let timeout = crate::expiry::cleanup_timeout(&nb.cleanup_timeout);
    match nocobase::cleanup_wait(since, now, timeout) {
        CleanupWait::GiveUp => {
            give_up(ctx, mmi, e.reason, &format!("{} The operator tried for {} (spec.nocobase.cleanupTimeout) and gives up; {left} stay in NocoBase: remove them by hand.", e.message, nb.cleanup_timeout)).await;
            Ok(None)
        }
        CleanupWait::Retry(pause) => {
            info!(reason = e.reason, retry_in = ?pause, "still waiting for NocoBase to clean up");
            Ok(Some(Action::requeue(pause)))
        }
        CleanupWait::Start(pause) => {
            record_wait_start(mmi, ctx, now).await?;
            let until = now
                .checked_add(timeout)
                .map_or_else(|_| "later".to_owned(), |t| t.to_string());
            publish(ctx, mmi, true, "NocoBaseCleanupWaiting", &format!("{} The integration is being deleted: the operator retries removing {left} until {until} (spec.nocobase.cleanupTimeout {}), then gives up.", e.message, nb.cleanup_timeout)).await;
            Ok(Some(Action::requeue(pause)))
        }
    }
}

/// Records in status when the cleanup started waiting, so that the timeout holds across
/// operator restarts. The whole status is applied: an apply without a field would drop it.
async fn record_wait_start(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    now: Timestamp,
) -> Result<(), Error> {
    let mut status = mmi.status.clone().unwrap_or_default();
    status
        .nocobase
        .get_or_insert_with(Default::default)
        .cleanup_waiting_since = Some(now.to_string());
    let api: Api<MicrosoftMailIntegration> =
        Api::namespaced(ctx.client.clone(), &mmi.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": MicrosoftMailIntegration::api_version(&()),
        "kind": MicrosoftMailIntegration::kind(&()),
        "status": status,
    });
    api.patch_status(
        &mmi.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn give_up(ctx: &Context, mmi: &MicrosoftMailIntegration, reason: &str, message: &str) {
    warn!(
        reason,
        message, "could not delete the operator's NocoBase variables"
    );
    publish(ctx, mmi, true, "NocoBaseCleanupFailed", message).await;
}

async fn publish(
    ctx: &Context,
    mmi: &MicrosoftMailIntegration,
    warning: bool,
    reason: &str,
    note: &str,
) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(crate::decide::event_note(note)),
        action: "CleanupNocoBase".into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&ev, &mmi.object_ref(&())).await {
        // an Event lost is not worth blocking a deletion over
        warn!(error = %err, reason, "could not record Event");
    }
}
