//! The email manager's own settings (`spec.nocobase.mailSettings`): the path that reaches
//! the mail. NocoBase's email manager keeps the Microsoft client ID and client secret in a
//! record of its own collection (default `mailSettings`), entered on its "Email settings"
//! page, which does not resolve `{{$env.NAME}}`; the operator writes that record.
//!
//! - [`path`]: field paths into JSON fields (`options.clientSecret`);
//! - [`plan`]: pure: which record, which fields or keys;
//! - [`write`]: pure: what to write, the merged body, its condition, what the read-back
//!   confirms;
//! - [`sync`]: the sequence with a [`crate::nocobase::NocoBaseClient`] (discover, list,
//!   write under a condition, retry on a concurrent change, read back) and the cleanup.
//!
//! NocoBase answers 200 to an update naming a field that does not exist and writes
//! nothing, so discovery before writing and a read-back after are the only protection
//! against silently writing nothing.

pub mod path;
pub mod plan;
pub mod sync;
pub mod write;

use std::collections::BTreeMap;

pub use crate::api::MailSettingsStatus;
use crate::api::{MailSettings, NOCOBASE_NAME_RE};

pub use path::FieldPath;
pub use plan::{Located, Problem, Values, field_fingerprint, locate};
pub use sync::{Discovered, MailOutcome, Wanted, cleanup, discover, sync};
pub use write::{Confirmation, WritePlan, confirm, plan_write};

/// Reasons of the `MailSettingsSynced` condition.
pub mod reason {
    pub use crate::nocobase::records::reason::{FIELD_UNKNOWN, NOT_FOUND, REFUSED};
    /// True: the record holds the validated values.
    pub const SYNCED: &str = "Synced";
    /// No record matches `match`.
    pub const RECORD_NOT_FOUND: &str = "MailSettingsRecordNotFound";
    /// Several records match `match`: the operator does not guess.
    pub const AMBIGUOUS: &str = "MailSettingsAmbiguous";
    /// NocoBase accepted the write but the record reads back other values.
    pub const NOT_APPLIED: &str = "MailSettingsNotApplied";
    /// A collection, field or match name NocoBase cannot have (normally refused at apply).
    pub const INVALID: &str = "InvalidMailSettings";
    /// A path leads into a JSON field hidden from reads: it cannot be merged without
    /// dropping the field's other keys, so nothing is written.
    pub const FIELD_HIDDEN: &str = "MailSettingsFieldHidden";
    /// The record kept changing between the operator's read and its conditional write
    /// (retried; transient).
    pub const CHANGED_DURING_WRITE: &str = "MailSettingsChangedDuringWrite";
    /// Unknown: nothing is written before Microsoft accepts the credentials.
    pub const AWAITING_VALID_CREDENTIALS: &str = "AwaitingValidCredentials";

    /// Every reason of this condition (besides the NocoBase ones shared with
    /// `NocoBaseSynced`: NocoBaseUnreachable, ApiKeyRejected, AppNotFound, ...).
    pub const ALL: &[&str] = &[
        SYNCED,
        NOT_FOUND,
        FIELD_UNKNOWN,
        RECORD_NOT_FOUND,
        AMBIGUOUS,
        NOT_APPLIED,
        REFUSED,
        INVALID,
        FIELD_HIDDEN,
        CHANGED_DURING_WRITE,
        AWAITING_VALID_CREDENTIALS,
    ];
}

/// Whether `s` is a name NocoBase can have for a collection or field (the CEL rule
/// [`NOCOBASE_NAME_RE`], at most 63 characters).
pub fn valid_name(s: &str) -> bool {
    let _ = NOCOBASE_NAME_RE;
    let mut c = s.chars();
    s.len() <= 63
        && c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// The input checks of `spec.nocobase.mailSettings` (the CRD's CEL rules, repeated for
/// `check`, `render` and resources admitted before the rules existed).
pub fn check_settings(s: &MailSettings) -> Result<(), Problem> {
    let mut bad: Vec<String> = [&s.collection]
        .into_iter()
        .chain(s.match_fields.keys())
        .filter(|n| !valid_name(n))
        .map(|n| format!("{n:?}"))
        .collect();
    let paths: Vec<Option<FieldPath>> = [&s.fields.client_id, &s.fields.client_secret]
        .into_iter()
        .map(|f| FieldPath::parse(f).map_err(|e| bad.push(e)).ok())
        .collect();
    if let [Some(id), Some(secret)] = paths.as_slice() {
        let inside = |a: &FieldPath, b: &FieldPath| {
            a.top == b.top && b.keys.len() >= a.keys.len() && b.keys[..a.keys.len()] == a.keys[..]
        };
        if inside(id, secret) || inside(secret, id) {
            bad.push(format!(
                "fields.clientId ({id}) and fields.clientSecret ({secret}) are the same field or one is inside the other"
            ));
        }
    }
    if s.match_fields.len() > 8 || s.match_fields.values().any(|v| v.len() > 256) {
        bad.push("match has more than 8 entries or a value over 256 characters".into());
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(Problem {
        reason: reason::INVALID,
        message: format!(
            "spec.nocobase.mailSettings is not usable: {}. Collection and field names hold letters, digits and _ (at most 63), not starting with a digit; a field may be followed by .keys inside a JSON field (a dot inside a key written \\.); nothing was sent to NocoBase",
            bad.join("; ")
        ),
    })
}

/// `provider=outlook, ...`: the match as an administrator reads it.
pub fn match_text(m: &BTreeMap<String, String>) -> String {
    if m.is_empty() {
        return "no match (the only record)".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_settings_are_checked() {
        for ok in ["mailSettings", "clientId", "_x", "a1_B"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a.b", "$x", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(check_settings(&MailSettings::default()).is_ok());
        let mut s = MailSettings::default();
        s.fields.client_secret = "clientId".into();
        s.match_fields.insert("bad-key".into(), "x".into());
        let p = check_settings(&s).unwrap_err();
        assert_eq!(p.reason, reason::INVALID);
        assert!(p.message.contains("bad-key") && p.message.contains("same field"));
        s.match_fields.clear();
        s.fields.client_id = "options".into();
        s.fields.client_secret = "options.clientSecret".into();
        assert!(
            check_settings(&s)
                .unwrap_err()
                .message
                .contains("inside the other")
        );
        s.fields.client_id = r"options.outlook\.id".into();
        assert!(check_settings(&s).is_ok());
        s.fields.client_id = "options..id".into();
        assert!(check_settings(&s).unwrap_err().message.contains("empty"));
    }
}
