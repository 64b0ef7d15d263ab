//! The record step of a reconcile: status written only when it changed, the decided
//! Events, the metrics. Nothing is chosen here; [`crate::decide::actions::conclude`] did.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::{Context, Error};
use crate::api::{MicrosoftMailIntegration, MicrosoftMailIntegrationStatus};
use crate::decide::{Decision, EventSpec, event_note};
use crate::inject::FIELD_MANAGER;

/// Writes status (only when it changed) and the Events, and updates the metrics.
pub async fn record(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    d: &Decision,
) -> Result<(), Error> {
    let ns = mmi.namespace().unwrap_or_default();
    let name = mmi.name_any();
    // compared as written: a status cut to its bounds equals the one read back
    let status = crate::decide::bounds::bounded(&d.status);
    if mmi.status.as_ref() != Some(&status) {
        write_status(mmi, ctx, &status).await?;
    }
    publish_events(mmi, ctx, &d.events).await;
    ctx.metrics
        .set_integration(&ns, &name, mmi.labels(), &d.status);
    Ok(())
}

/// The one status writer: the whole status, applied (an apply without a field would drop
/// it), forced, as the operator's field manager.
pub async fn write_status(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    status: &MicrosoftMailIntegrationStatus,
) -> Result<(), Error> {
    let api: Api<MicrosoftMailIntegration> =
        Api::namespaced(ctx.client.clone(), &mmi.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": MicrosoftMailIntegration::api_version(&()),
        "kind": MicrosoftMailIntegration::kind(&()),
        "status": crate::decide::bounds::bounded(status),
    });
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&mmi.name_any(), &pp, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Records the decided Events; an Event lost is not worth failing the reconcile over.
pub async fn publish_events(mmi: &MicrosoftMailIntegration, ctx: &Context, events: &[EventSpec]) {
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
