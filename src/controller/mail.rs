//! Kubernetes side of the email manager's settings: the write the pure core planned
//! ([`crate::decide::reports::mail_work`]: only credentials Microsoft accepted, or
//! opted-in unverified ones), carried out by [`crate::mailsettings::sync`]. The cleanup on
//! deletion is in `reconcile/nocobase.rs`, with the variables'.

use tracing::{info, warn};

use crate::api::{MailSettings, MicrosoftMailIntegration};
use crate::mailsettings::{self, MailOutcome, Wanted};
use crate::nocobase::NocoBaseClient;

/// Writes the planned credentials into the email manager's settings record; the outcome
/// goes back to the pure core ([`crate::decide::reports::mail_report`]).
pub(super) async fn write(
    mmi: &MicrosoftMailIntegration,
    ms: &MailSettings,
    client: &NocoBaseClient,
    wanted: &Wanted,
    key: &crate::fingerprint::IntegrationKey,
) -> MailOutcome {
    let state = mmi.status.as_ref().and_then(|s| s.mail_settings.as_ref());
    let out = mailsettings::sync(client, ms, wanted, key.as_bytes(), state).await;
    if !out.ok {
        warn!(reason = out.reason, "email manager settings not written");
    } else if !out.written.is_empty() {
        info!(fields = ?out.written, "email manager settings written");
    }
    out
}
