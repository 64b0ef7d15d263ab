//! Kubernetes side of the email manager's settings: the same gate as every delivery (only
//! credentials Microsoft accepted, or opted-in unverified ones, are written), then the
//! write sequence of [`crate::mailsettings::sync`], and the cleanup on deletion.

use kube::ResourceExt;
use tracing::{info, warn};

use super::reconcile::{Context, Error, nocobase_client};
use crate::api::{
    MailSettings, MicrosoftMailIntegration, MicrosoftMailIntegrationStatus, NocoBaseSync,
};
use crate::decide::{ConditionStatus, CredentialCheck, Delivery, MailSettingsReport};
use crate::input::Credentials;
use crate::mailsettings::{self, Wanted, reason};

/// With `spec.nocobase.mailSettings.enabled`: writes the validated client ID and secret
/// into the email manager's settings record. `None` when not enabled.
pub(super) async fn sync_mail_settings(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
    previous: &MicrosoftMailIntegrationStatus,
    check: &CredentialCheck,
    creds: Option<&Credentials>,
    gate: Delivery,
) -> Result<Option<MailSettingsReport>, Error> {
    let Some(nb) = &mmi.spec.nocobase else {
        return Ok(None);
    };
    let Some(ms) = nb.mail_settings.as_ref().filter(|m| m.enabled) else {
        return Ok(None);
    };
    sync_enabled(mmi, nb, ms, ctx, previous, check, creds, gate)
        .await
        .map(Some)
}

#[allow(clippy::too_many_arguments)]
async fn sync_enabled(
    mmi: &MicrosoftMailIntegration,
    nb: &NocoBaseSync,
    ms: &MailSettings,
    ctx: &Context,
    previous: &MicrosoftMailIntegrationStatus,
    check: &CredentialCheck,
    creds: Option<&Credentials>,
    gate: Delivery,
) -> Result<MailSettingsReport, Error> {
    let state = previous.mail_settings.clone();
    let report = |status, reason: &str, message: String, state| MailSettingsReport {
        status,
        reason: reason.into(),
        message,
        state,
        writes: 0,
        retry_soon: false,
    };
    let (CredentialCheck::Ready { fingerprint }, Some(c)) = (check, creds) else {
        return Ok(held_back(state));
    };
    if gate == Delivery::Withheld {
        return Ok(held_back(state));
    }
    let client = match nocobase_client(mmi, nb, ctx).await? {
        Ok(c) => c,
        Err((reason, message)) => {
            return Ok(report(ConditionStatus::False, &reason, message, state));
        }
    };
    let wanted = Wanted {
        client_id: c.client_id.clone(),
        client_secret: c.client_secret.clone(),
        credentials_fingerprint: fingerprint.clone(),
    };
    let uid = mmi.uid().unwrap_or_default();
    let out = mailsettings::sync(&client, ms, &wanted, uid.as_bytes(), state.as_ref()).await;
    if out.ok {
        if !out.written.is_empty() {
            info!(fields = ?out.written, "email manager settings written");
        }
        return Ok(MailSettingsReport {
            writes: out.written.len(),
            ..report(ConditionStatus::True, out.reason, out.message, out.state)
        });
    }
    warn!(reason = out.reason, "email manager settings not written");
    Ok(MailSettingsReport {
        writes: out.written.len(),
        retry_soon: out.transient,
        ..report(ConditionStatus::False, out.reason, out.message, out.state)
    })
}

/// Credentials not (yet) accepted: nothing is written; say what the settings hold.
fn held_back(state: Option<crate::mailsettings::MailSettingsStatus>) -> MailSettingsReport {
    let (status, message) = match &state {
        Some(s) => (
            ConditionStatus::True,
            format!(
                "The credentials now in the Secret are not accepted by Microsoft; the email manager's settings (collection {}, record {}) keep the previously validated ones.",
                s.collection, s.record
            ),
        ),
        None => (
            ConditionStatus::Unknown,
            "Nothing is written into the email manager's settings until Microsoft accepts the credentials.".to_owned(),
        ),
    };
    MailSettingsReport {
        status,
        reason: reason::AWAITING_VALID_CREDENTIALS.into(),
        message,
        state,
        writes: 0,
        retry_soon: false,
    }
}

/// On deletion: with `clearOnCleanup`, empties the fields the operator wrote. One
/// attempt: NocoBase gone for good must not hold the integration forever.
pub(super) async fn cleanup_mail_settings(
    mmi: &MicrosoftMailIntegration,
    ctx: &Context,
) -> Result<(), Error> {
    let Some(nb) = &mmi.spec.nocobase else {
        return Ok(());
    };
    let (Some(ms), Some(state)) = (
        nb.mail_settings.as_ref().filter(|m| m.clear_on_cleanup),
        mmi.status.as_ref().and_then(|s| s.mail_settings.as_ref()),
    ) else {
        return Ok(());
    };
    match nocobase_client(mmi, nb, ctx).await? {
        Ok(client) => match mailsettings::cleanup(&client, ms, state).await {
            Ok(cleared) => {
                info!(fields = ?cleared, "emptied the email manager's settings the operator wrote")
            }
            Err(e) => {
                warn!(reason = e.reason, error = %e.message, "could not empty the email manager's settings; clear them by hand")
            }
        },
        Err((reason, message)) => warn!(
            reason,
            message, "could not empty the email manager's settings; clear them by hand"
        ),
    }
    Ok(())
}
