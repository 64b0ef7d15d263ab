//! What a validation concluded: an outcome, a CamelCase reason, a message an administrator
//! can act on, and what else was learned (expiry, missing permissions).

use std::time::Duration;

use crate::api::ExpirySource;

pub use crate::api::Outcome;

/// The secret's expiry as far as it is known. `expires_at` is never guessed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExpiryInfo {
    pub expires_at: Option<jiff::Timestamp>,
    pub source: Option<ExpirySource>,
    /// Why the expiry is unknown, or how it was found, for the report.
    pub note: Option<String>,
}

/// What was learned from Microsoft Graph after a valid token (expiry and permissions).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphFindings {
    pub expiry: ExpiryInfo,
    /// `None` when the app registration could not be read.
    pub missing_permissions: Option<Vec<String>>,
    /// Audience and Web redirect URIs of the registration; `None` when it could not be read.
    pub registration: Option<Registration>,
}

/// What the email manager needs from the app registration besides permissions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    /// `signInAudience`, e.g. `AzureADMyOrg` (single tenant).
    pub sign_in_audience: Option<String>,
    /// `web.redirectUris`.
    pub web_redirect_uris: Vec<String>,
}

/// The result of one validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// CamelCase reason; `None` when valid.
    pub reason: Option<&'static str>,
    /// The AADSTS code Microsoft returned, if any.
    pub aadsts_code: Option<i64>,
    /// What happened, in words an administrator can act on.
    pub message: String,
    /// The next step, when there is one.
    pub hint: Option<String>,
    /// How long Microsoft asked us to wait (throttling).
    pub retry_after: Option<Duration>,
    /// Microsoft's trace and correlation IDs, useful in a support request.
    pub trace_id: Option<String>,
    pub correlation_id: Option<String>,
    pub graph: GraphFindings,
    /// Notes about the input (e.g. a trailing newline removed).
    pub notes: Vec<String>,
    /// When Microsoft gave this answer, when it was shared from an earlier request;
    /// `None`: just now.
    pub asked_at: Option<jiff::Timestamp>,
}

impl Verdict {
    pub fn new(outcome: Outcome, reason: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            outcome,
            reason,
            aadsts_code: None,
            message: message.into(),
            hint: None,
            retry_after: None,
            trace_id: None,
            correlation_id: None,
            graph: GraphFindings::default(),
            notes: Vec::new(),
            asked_at: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn unavailable(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Outcome::Unavailable, Some(reason), message)
    }
}

/// Reasons, gathered in one place so the README table and the tests can list them.
pub mod reason {
    // Rejected
    pub const INVALID_SECRET: &str = "InvalidSecret";
    pub const SECRET_ID_INSTEAD_OF_VALUE: &str = "SecretIdInsteadOfValue";
    pub const SECRET_EXPIRED: &str = "SecretExpired";
    pub const SECRET_MISSING: &str = "SecretMissing";
    pub const APPLICATION_NOT_FOUND: &str = "ApplicationNotFound";
    pub const APPLICATION_DISABLED: &str = "ApplicationDisabled";
    pub const TENANT_NOT_FOUND: &str = "TenantNotFound";
    pub const INVALID_TENANT: &str = "InvalidTenant";
    pub const BLOCKED_BY_CONDITIONAL_ACCESS: &str = "BlockedByConditionalAccess";
    pub const GRAPH_NOT_AVAILABLE_IN_TENANT: &str = "GraphNotAvailableInTenant";
    pub const INVALID_SCOPE: &str = "InvalidScope";
    pub const UNKNOWN_AUTHORITY: &str = "UnknownAuthority";
    pub const REJECTED_BY_MICROSOFT: &str = "RejectedByMicrosoft";
    // Unavailable
    pub const THROTTLED: &str = "Throttled";
    pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailable";
    pub const TIMEOUT: &str = "Timeout";
    pub const NETWORK_ERROR: &str = "NetworkError";
    pub const TLS_ERROR: &str = "TlsError";
    pub const UNEXPECTED_RESPONSE: &str = "UnexpectedResponse";
}
