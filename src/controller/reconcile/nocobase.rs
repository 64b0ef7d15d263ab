//! The NocoBase side of a reconcile's execute step: the client (allow-list first, then the
//! API key through the one credential reader, on the controller's shared HTTP client),
//! the planned variable sync and mail settings write (their answers go back to the pure
//! core), and the opted-in cleanup when the integration goes away (the operator's variables,
//! the email manager's fields it wrote), whose retries and give-ups
//! [`crate::decide::cleanup`] decides.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::record::{publish_events, write_status};
use super::{Context, Error, FINALIZER, now};
use crate::api::{MicrosoftMailIntegration, NocoBaseSync};
use crate::decide::EventSpec;
use crate::decide::actions::{Actions, Executed};
use crate::decide::cleanup::{
    CleanupAttempt, CleanupDue, CleanupWaiting, nocobase_cleanup_due, nocobase_cleanup_step,
};
use crate::decide::reports::{MailWork, NocoBaseWork, Refusal};
use crate::nocobase::{self, DesiredVar, NocoBaseClient, NocoBaseOptions, SyncOutcome};

/// A NocoBase client with the API key from its Secret, or the reason and message saying
/// why there is none. The allow-list is checked before the API key is even read: no
/// request to a URL outside the list.
pub(in crate::controller) async fn nocobase_client(
    mmi: &MicrosoftMailIntegration,
    nb: &NocoBaseSync,
    ctx: &Context,
) -> Result<Result<NocoBaseClient, Refusal>, Error> {
    let ns = mmi.namespace();
    if let Err(p) = ctx
        .allow
        .check_in(crate::allow::Endpoint::NocoBase, &nb.url, ns.as_deref())
    {
        return Ok(Err((p.reason.into(), p.message)));
    }
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &mmi.namespace().unwrap_or_default());
    let secret = secrets.get_opt(&nb.api_key_secret_ref.name).await?;
    let opts = NocoBaseOptions {
        observer: Some(ctx.metrics.nocobase_request_observer()),
        http: Some(ctx.http.clone()),
        ..Default::default()
    };
    Ok(
        crate::credentials::api_key(mmi, nb, secret.as_ref()).and_then(|key| {
            NocoBaseClient::new(&nb.url, key, nb.app.clone(), opts)
                .map_err(|e| ("InvalidNocoBaseSettings".into(), e))
        }),
    )
}

/// Carries the plan's NocoBase work out (one client for both writes); the answers go back
/// to the pure core through `done`.
pub async fn execute(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    plan: &Actions,
    done: &mut Executed,
) -> Result<(), Error> {
    let Some(nb) = &mmi.spec.nocobase else {
        return Ok(());
    };
    let desired = match &plan.nocobase {
        Some(NocoBaseWork::Sync(d)) => Some(d),
        _ => None,
    };
    let wanted = match (&plan.mail_settings, &nb.mail_settings) {
        (Some(MailWork::Write(w)), Some(ms)) => Some((w, ms)),
        _ => None,
    };
    // The collection is checked before the API key is read, like the URL.
    let collection_refused = wanted.and_then(|(_, ms)| {
        ctx.allow
            .check_mail_collection(&ms.collection)
            .err()
            .map(|p| (p.reason.to_owned(), p.message))
    });
    if let Some(refusal) = &collection_refused {
        done.mail_settings = Some(Err(refusal.clone()));
    }
    let wanted = wanted.filter(|_| collection_refused.is_none());
    if desired.is_none() && wanted.is_none() {
        return Ok(());
    }
    let client = nocobase_client(mmi, nb, ctx).await?;
    if let Some(desired) = desired {
        done.nocobase = Some(match &client {
            Ok(c) => Ok(sync(mmi, c, desired).await),
            Err(refusal) => Err(refusal.clone()),
        });
    }
    if let Some((w, ms)) = wanted {
        done.mail_settings = Some(match &client {
            Ok(c) => Ok(super::super::mail::write(mmi, ms, c, w, &ctx.key_of(mmi)).await),
            Err(refusal) => Err(refusal.clone()),
        });
    }
    Ok(())
}

/// Writes the planned variables into NocoBase.
async fn sync(
    mmi: &MicrosoftMailIntegration,
    client: &NocoBaseClient,
    desired: &[DesiredVar],
) -> SyncOutcome {
    let state = mmi
        .status
        .as_ref()
        .and_then(|s| s.nocobase.clone())
        .unwrap_or_default();
    let out = nocobase::sync(client, desired, &state).await;
    match (out.ok, out.writes) {
        (true, 0) => {}
        (true, writes) => info!(
            writes,
            refreshed = out.refreshed,
            "NocoBase variables updated"
        ),
        (false, _) => warn!(reason = out.reason, "NocoBase sync failed"),
    }
    out
}

/// On deletion, before the finalizer goes: deletes the variables the operator owns
/// (`deleteOnCleanup`) and empties the email manager's fields it wrote (`clearOnCleanup`).
/// `Some(action)` while it waits for a NocoBase that is down, restarting or overloaded (the
/// finalizer stays); `None` when done, when there is nothing to do, or when it gave up (an
/// answer that can never succeed, or `cleanupTimeout` passed), each give-up with a Warning
/// Event naming what is left behind ([`nocobase_cleanup_step`] decides).
pub async fn cleanup_nocobase(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
) -> Result<Option<Action>, Error> {
    let deleting =
        mmi.meta().deletion_timestamp.is_some() && mmi.finalizers().iter().any(|f| f == FINALIZER);
    let Some(due) = nocobase_cleanup_due(mmi, deleting) else {
        return Ok(None);
    };
    let attempt = match nocobase_client(mmi, due.nb, ctx).await? {
        Err(refusal) => CleanupAttempt::Refused(refusal),
        Ok(client) => remove(&client, &due).await,
    };
    let since = mmi
        .status
        .as_ref()
        .and_then(|s| s.nocobase.as_ref())
        .and_then(|s| s.cleanup_waiting_since.as_deref());
    let now = now(ctx);
    let step = nocobase_cleanup_step(&due, attempt, since, now);
    for (reason, note) in step.give_ups {
        warn!(reason, message = note, "could not clean up in NocoBase");
        publish(ctx, mmi, "NocoBaseCleanupFailed", note).await;
    }
    match step.waiting {
        None => Ok(None),
        Some(CleanupWaiting::Retry(pause)) => {
            info!(retry_in = ?pause, "still waiting for NocoBase to clean up");
            Ok(Some(Action::requeue(pause)))
        }
        Some(CleanupWaiting::Start { pause, since, note }) => {
            record_wait_start(mmi, ctx, since).await?;
            publish(ctx, mmi, "NocoBaseCleanupWaiting", note).await;
            Ok(Some(Action::requeue(pause)))
        }
    }
}

/// Deletes the variables and empties the mail settings fields, as due; each answer goes
/// back to the pure step.
async fn remove(client: &NocoBaseClient, due: &CleanupDue<'_>) -> CleanupAttempt {
    let mut vars = None;
    if let Some(state) = due.vars {
        vars = Some(nocobase::cleanup(client, state, true).await.map(|done| {
            info!(deleted = ?done.deleted, "deleted the operator's NocoBase variables");
        }));
    }
    let mut mail = None;
    if let Some((ms, state)) = due.mail {
        mail = Some(crate::mailsettings::cleanup(client, ms, state).await.map(|cleared| {
            info!(fields = ?cleared, "emptied the email manager's settings the operator wrote");
        }));
    }
    CleanupAttempt::Ran { vars, mail }
}

/// A Warning Event of the cleanup; an Event lost is not worth blocking a deletion over.
async fn publish(ctx: &Context, mmi: &MicrosoftMailIntegration, reason: &str, note: String) {
    let event = EventSpec {
        warning: true,
        reason: reason.into(),
        note,
        action: "CleanupNocoBase",
    };
    publish_events(mmi, ctx, &[event]).await;
}

/// Records in status when the cleanup started waiting, so that the timeout holds across
/// operator restarts.
async fn record_wait_start(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    since: Timestamp,
) -> Result<(), Error> {
    let mut status = mmi.status.clone().unwrap_or_default();
    status
        .nocobase
        .get_or_insert_with(Default::default)
        .cleanup_waiting_since = Some(since.to_string());
    write_status(mmi, ctx, &status).await
}
