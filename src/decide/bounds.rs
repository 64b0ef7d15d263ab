//! The last bound before status is written: every message a status field holds is cut to
//! [`crate::quote::MAX_MESSAGE_CHARS`] and Graph's redirect URIs to the 256 Microsoft
//! allows, whatever produced them. The lists quoted inside messages are bounded where
//! they are written ([`crate::quote`]); this is the guarantee that no answer, however it
//! is shaped, makes one integration's status large.

use crate::api::MicrosoftMailIntegrationStatus;
use crate::quote::message;

/// Redirect URIs an app registration may have (Microsoft's own limit).
pub const MAX_REDIRECT_URIS: usize = 256;

fn cut(field: &mut Option<String>) {
    if let Some(m) = field.as_mut() {
        *m = message(m);
    }
}

/// `status` with every message and list within its bound (idempotent).
pub fn bounded(status: &MicrosoftMailIntegrationStatus) -> MicrosoftMailIntegrationStatus {
    let mut s = status.clone();
    for c in &mut s.conditions {
        c.message = message(&c.message);
    }
    if let Some(l) = s.last_validation.as_mut() {
        cut(&mut l.message);
        cut(&mut l.expiry_note);
        if let Some(uris) = l.web_redirect_uris.as_mut() {
            uris.truncate(MAX_REDIRECT_URIS);
            for u in uris.iter_mut() {
                *u = crate::http::clip(u, crate::http::MAX_QUOTED_CHARS);
            }
        }
    }
    if let Some(u) = s.last_unavailable.as_mut() {
        u.message = message(&u.message);
    }
    if let Some(r) = s.rotation.as_mut() {
        cut(&mut r.message);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LastValidation, RotationStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    #[test]
    fn every_message_and_list_is_cut_once() {
        let long = "x".repeat(100_000);
        let s = MicrosoftMailIntegrationStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "R".into(),
                message: long.clone(),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            last_validation: Some(LastValidation {
                message: Some(long.clone()),
                web_redirect_uris: Some(vec![long.clone(); 1000]),
                ..Default::default()
            }),
            rotation: Some(RotationStatus {
                message: Some(long.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let b = bounded(&s);
        let size = serde_json::to_string(&b).unwrap().len();
        assert!(size < 120_000, "{size} bytes");
        assert_eq!(bounded(&b), b, "bounding twice changes nothing");
        assert_eq!(
            b.conditions[0].message.chars().count(),
            crate::quote::MAX_MESSAGE_CHARS + 1
        );
    }
}
