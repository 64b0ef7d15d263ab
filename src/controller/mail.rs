//! Kubernetes side of the email manager's settings: the same gate as every delivery (only
//! credentials Microsoft accepted, or opted-in unverified ones, are written), then the
//! write sequence of [`crate::mailsettings::sync`], and the cleanup on deletion.

use kube::ResourceExt;
use tracing::{info, warn};

use crate::api::{
    MailSettings, MicrosoftMailIntegration, MicrosoftMailIntegrationStatus, NocoBaseSync,
};
use crate::decide::{ConditionStatus, CredentialCheck, Delivery, MailSettingsReport};
use crate::input::Credentials;
use crate::mailsettings::{self, Wanted, reason};
use crate::nocobase::NocoBaseClient;

/// The NocoBase and mail settings blocks, when writing the email manager's settings is
/// enabled.
pub(super) fn enabled(mmi: &MicrosoftMailIntegration) -> Option<(&NocoBaseSync, &MailSettings)> {
    let nb = mmi.spec.nocobase.as_ref()?;
    nb.mail_settings
        .as_ref()
        .filter(|m| m.enabled)
        .map(|m| (nb, m))
}

/// Writes the validated client ID and secret into the email manager's settings record.
/// `client` is the NocoBase client, or why there is none (the API key's Secret).
pub(super) async fn sync_mail_settings(
    mmi: &MicrosoftMailIntegration,
    ms: &MailSettings,
    client: Result<NocoBaseClient, (String, String)>,
    previous: &MicrosoftMailIntegrationStatus,
    check: &CredentialCheck,
    creds: Option<&Credentials>,
    gate: Delivery,
) -> MailSettingsReport {
    let state = previous.mail_settings.clone();
    let report = |status, reason: &str, message: String, state| MailSettingsReport {
        status,
        reason: reason.into(),
        message,
        state,
        writes: 0,
        retry_after: None,
    };
    let (CredentialCheck::Ready { fingerprint }, Some(c)) = (check, creds) else {
        return held_back(state);
    };
    if gate == Delivery::Withheld {
        return held_back(state);
    }
    let client = match client {
        Ok(c) => c,
        Err((reason, message)) => {
            return report(ConditionStatus::False, &reason, message, state);
        }
    };
    let wanted = Wanted {
        client_id: c.client_id.clone(),
        client_secret: c.client_secret.clone(),
        credentials_fingerprint: fingerprint.clone(),
    };
    let uid = mmi.uid().unwrap_or_default();
    let out = mailsettings::sync(&client, ms, &wanted, uid.as_bytes(), state.as_ref()).await;
    let writes = out.written.len();
    if out.ok {
        if writes > 0 {
            info!(fields = ?out.written, "email manager settings written");
        }
        return MailSettingsReport {
            writes,
            ..report(ConditionStatus::True, out.reason, out.message, out.state)
        };
    }
    warn!(reason = out.reason, "email manager settings not written");
    if out.reason == crate::nocobase::reason::NOCOBASE_RESTARTING {
        let t = crate::api::condition::MAIL_SETTINGS_SYNCED;
        let c = crate::decide::while_restarting(&previous.conditions, t, &out.message);
        return MailSettingsReport {
            writes,
            retry_after: Some(super::reconcile::nocobase::RESTARTING_RETRY),
            ..report(c.status, &c.reason, c.message, out.state)
        };
    }
    MailSettingsReport {
        writes,
        retry_after: out
            .transient
            .then_some(super::reconcile::nocobase::UNREACHABLE_RETRY),
        ..report(ConditionStatus::False, out.reason, out.message, out.state)
    }
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
        retry_after: None,
    }
}

/// What a deletion with `clearOnCleanup` empties: the settings and what status recorded.
pub(super) fn to_clear(
    mmi: &MicrosoftMailIntegration,
) -> Option<(
    &NocoBaseSync,
    &MailSettings,
    &crate::mailsettings::MailSettingsStatus,
)> {
    let nb = mmi.spec.nocobase.as_ref()?;
    let ms = nb.mail_settings.as_ref().filter(|m| m.clear_on_cleanup)?;
    let state = mmi.status.as_ref()?.mail_settings.as_ref()?;
    Some((nb, ms, state))
}
