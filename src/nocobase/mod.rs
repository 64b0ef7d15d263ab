//! Everything about NocoBase's "Variables and secrets" (`@nocobase/plugin-environment-variables`),
//! laid out like [`crate::microsoft`]: the REST client ([`client`], the only NocoBase I/O,
//! with [`records`] for ordinary collections), the pure reading of its answers
//! ([`classify`], [`endpoint`]), and the sync as plan ([`plan`], pure) / execute ([`sync`])
//! / record ([`record`], pure).
//!
//! The operator writes the validated Microsoft credentials into three NocoBase variables
//! (client ID and tenant ID of type `default`, client secret of type `secret`), which the
//! email manager's settings reference as `{{$env.NAME}}`; `app:refresh` applies a change
//! without restarting the pod. See `docs/nocobase.md`.

pub mod classify;
pub mod client;
pub mod endpoint;
pub mod plan;
pub mod record;
mod record_errors;
pub mod records;
pub mod sync;

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use classify::SyncError;
pub use client::{Listed, NocoBaseClient, NocoBaseOptions, VarWrite};
pub use plan::{
    Conflict, Desired, DesiredVar, Plan, Step, StepAction, SyncedState, SyncedVariable,
    cleanup_plan, plan, value_fingerprint,
};
pub use record::{CleanupWait, SyncOutcome, cleanup_wait};
pub use records::{Condition, Fields, ReadValue, Record};
pub use sync::{CleanupOutcome, cleanup, sync};

/// The type of a NocoBase variable. NocoBase treats every `type` other than `secret` as
/// plain text (`model.type === "secret"` decides encryption), so an unknown or missing
/// `type` in a listing reads as [`VarKind::Default`].
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum VarKind {
    /// Plain text, shown in NocoBase's UI and listed with its value.
    Default,
    /// AES-encrypted at rest, never listed with its value.
    Secret,
}

impl VarKind {
    /// The `type` NocoBase stores.
    pub fn as_str(self) -> &'static str {
        match self {
            VarKind::Default => "default",
            VarKind::Secret => "secret",
        }
    }

    fn from_nocobase(t: Option<&str>) -> Self {
        if t == Some("secret") {
            VarKind::Secret
        } else {
            VarKind::Default
        }
    }
}

impl fmt::Display for VarKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Machine-readable reasons of a failed sync (status conditions, Events, metrics).
pub mod reason {
    /// No HTTP answer (DNS, connection refused, TLS, timeout) or HTTP 5xx/429: NocoBase is
    /// down, starting or restarting. Transient.
    pub const NOCOBASE_UNREACHABLE: &str = "NocoBaseUnreachable";
    /// HTTP 503 with `maintaining: true` (code `APP_COMMANDING`, `APP_STARTING` or
    /// `APP_INITIALIZING`): NocoBase is reloading its plugins after `app:refresh` or while it
    /// starts, for one to several seconds. Transient, retried within seconds, and never a
    /// reason to turn a condition False.
    pub const NOCOBASE_RESTARTING: &str = "NocoBaseRestarting";
    /// HTTP 401 (key wrong, expired, revoked) or 403 (the key's role may not manage
    /// variables or refresh the app).
    pub const API_KEY_REJECTED: &str = "ApiKeyRejected";
    /// HTTP 404 on `environmentVariables:*`: the "Variables and secrets" plugin is not
    /// enabled, or the URL is not NocoBase's root.
    pub const PLUGIN_MISSING: &str = "PluginMissing";
    /// HTTP 404 from NocoBase's gateway with `APP_NOT_FOUND`: no application of that name
    /// (`spec.nocobase.app`, sent as `X-App`).
    pub const APP_NOT_FOUND: &str = "AppNotFound";
    /// A variable name NocoBase refuses (`^[A-Za-z][A-Za-z0-9_]*$`), or one name used for
    /// two variables. Detected before sending when possible, or from NocoBase's HTTP 400.
    pub const INVALID_VARIABLE_NAME: &str = "InvalidVariableName";
    /// A variable of a wanted name exists that the operator never wrote, and the spec does
    /// not set `adoptExisting`: nothing is written. Also HTTP 400 "name already exists" on
    /// create: somebody created the variable after the operator listed them (transient:
    /// the next sync sees it and reports it as above, or a type conflict).
    pub const VARIABLE_EXISTS: &str = "VariableExists";
    /// A variable of the wanted name exists with the other type (`default` vs `secret`).
    /// The operator never changes a variable's type; nothing is written.
    pub const VARIABLE_TYPE_CONFLICT: &str = "VariableTypeConflict";
    /// Any other answer: unreadable or non-NocoBase body, an unexpected status, a write
    /// that did not show up when read back. Transient.
    pub const UNEXPECTED_RESPONSE: &str = "UnexpectedResponse";

    /// Every reason, for documentation and tests.
    pub const ALL: &[&str] = &[
        NOCOBASE_UNREACHABLE,
        NOCOBASE_RESTARTING,
        API_KEY_REJECTED,
        PLUGIN_MISSING,
        APP_NOT_FOUND,
        INVALID_VARIABLE_NAME,
        VARIABLE_EXISTS,
        VARIABLE_TYPE_CONFLICT,
        UNEXPECTED_RESPONSE,
    ];
}

/// Longest name NocoBase stores (`name` is a `string` field, `VARCHAR(255)`).
pub const MAX_NAME_LEN: usize = 255;

/// Whether NocoBase accepts `name` as a variable name: `VAR_NAME_RE` of the plugin,
/// `^[A-Za-z][A-Za-z0-9_]*$`, at most 255 characters.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `name` is a NocoBase collection name as the CRD admits it
/// ([`crate::api::NOCOBASE_NAME_RE`]: letters, digits and `_`, not starting with a digit),
/// at most 63 characters.
pub fn valid_collection(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::{VarKind, valid_name};

    #[test]
    fn names_follow_the_plugin_pattern() {
        for ok in ["MICROSOFT_CLIENT_ID", "a", "A1_", "x_y_Z9"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "1A", "_A", "A-B", "A B", "Ä", "A.B", "$env"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_name(&"A".repeat(255)));
        assert!(!valid_name(&"A".repeat(256)));
    }

    #[test]
    fn kinds_follow_nocobase() {
        assert_eq!(VarKind::from_nocobase(Some("secret")), VarKind::Secret);
        assert_eq!(VarKind::from_nocobase(Some("default")), VarKind::Default);
        assert_eq!(VarKind::from_nocobase(None), VarKind::Default);
    }
}
