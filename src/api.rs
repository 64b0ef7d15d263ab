//! The `MicrosoftMailIntegration` API (`nocobase-mail-operator.dev/v1alpha1`).
//!
//! Doc comments on these types become the CRD's field descriptions, which is what
//! `kubectl explain` shows, so they are written for a cluster administrator.
//! CEL rules (`x-kubernetes-validations`) reject at admission what is wrong on its face;
//! `crate::input` repeats the same checks in Rust for the `check` command and the
//! controller, and a test keeps the two in agreement.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group. The project's own domain, so it can never collide with an API NocoBase
/// (nocobase.com) might publish one day.
pub const GROUP: &str = "nocobase-mail-operator.dev";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "MicrosoftMailIntegration";

/// Condition types written to `status.conditions`.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const CREDENTIALS_VALID: &str = "CredentialsValid";
    pub const SECRET_EXPIRING: &str = "SecretExpiring";
    pub const INJECTED: &str = "Injected";
    pub const NOCOBASE_SYNCED: &str = "NocoBaseSynced";
    pub const MAIL_SETTINGS_SYNCED: &str = "MailSettingsSynced";
    pub const APP_REGISTRATION_READY: &str = "AppRegistrationReady";
    pub const ROTATED: &str = "Rotated";
}

/// Annotations a user sets on an integration (by hand or with the CLI).
pub mod annotation {
    /// RFC 3339 time: a time newer than the last rotation asks for a rotation now
    /// (`nocobase-mail-operator rotate NAME`).
    pub const ROTATE_REQUESTED_AT: &str = "nocobase-mail-operator.dev/rotate-requested-at";
    /// RFC 3339 time: a time after the new secret was delivered approves removing the old
    /// one (`nocobase-mail-operator rotate NAME --approve-retire`).
    pub const RETIRE_APPROVED_AT: &str = "nocobase-mail-operator.dev/retire-approved-at";
    /// Every annotation of an integration the operator reads. A change of one does not
    /// bump `metadata.generation`, so the watch looks at their values itself.
    pub const READ: [&str; 2] = [ROTATE_REQUESTED_AT, RETIRE_APPROVED_AT];
}

pub const DEFAULT_SECRET_KEY: &str = "client-secret";
pub const DEFAULT_ENV_CLIENT_ID: &str = "MICROSOFT_CLIENT_ID";
pub const DEFAULT_ENV_CLIENT_SECRET: &str = "MICROSOFT_CLIENT_SECRET";
pub const DEFAULT_ENV_TENANT_ID: &str = "MICROSOFT_TENANT_ID";
/// 30 days, 7 days, 1 day, written as Kubernetes (Go) durations.
pub const DEFAULT_WARN_BEFORE: [&str; 3] = ["720h", "168h", "24h"];
pub const DEFAULT_VALIDATION_INTERVAL: &str = "6h";
/// Rotation defaults: start 45 days before expiry (before the 30-day warning), new secrets
/// live 180 days, the old one stays valid 24 h after the new one is delivered everywhere.
pub const DEFAULT_ROTATE_BEFORE: &str = "1080h";
pub const DEFAULT_LIFETIME: &str = "4320h";
pub const DEFAULT_RETIRE_AFTER: &str = "24h";

// Regular expressions shared by the CEL rules below (RE2 syntax, as the API server runs them).
const GUID_RE: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
const DOMAIN_RE: &str = "^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\\\\.)+[a-zA-Z]{2,63}$";
const ENV_NAME_RE: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
/// NocoBase collection and field names (letters, digits, `_`; not starting with a digit).
pub const NOCOBASE_NAME_RE: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
pub const DEFAULT_MAIL_COLLECTION: &str = "mailSettings";
pub const DEFAULT_MAIL_MATCH: (&str, &str) = ("provider", "outlook");
pub const DEFAULT_MAIL_FIELD_CLIENT_ID: &str = "clientId";
pub const DEFAULT_MAIL_FIELD_CLIENT_SECRET: &str = "clientSecret";
const HOST_URL_RULE: &str = "self.matches('^https://[^/?#]+(/[^?#]*)?$') || self.matches('^http://(localhost|127\\\\.0\\\\.0\\\\.1|\\\\[::1\\\\])(:[0-9]+)?(/[^?#]*)?$')";

/// Checks a client-secret against Microsoft Entra, tracks its expiry, and injects the
/// validated configuration into NocoBase Deployments in the same namespace.
// clippy mistakes the repeated `type_` of the printcolumn(...) groups for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nocobase-mail-operator.dev",
    version = "v1alpha1",
    kind = "MicrosoftMailIntegration",
    namespaced,
    doc = "Microsoft Entra app credentials for the NocoBase email manager: validated against Microsoft, watched for expiry, injected into NocoBase.",
    status = "MicrosoftMailIntegrationStatus",
    // the name labels the managed Secret (<name>-microsoft-credentials): a label value holds
    // at most 63 characters; `input::MAX_NAME_LEN` says the same.
    validation = Rule::new("self.metadata.name.size() <= 63").message("the name must be at most 63 characters: it labels the managed Secret <name>-microsoft-credentials"),
    shortname = "mmi",
    category = "nocobase",
    category = "all",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether NocoBase has working Microsoft credentials"
    ),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"CredentialsValid\")].status",
        description = "Whether Microsoft accepted the client secret"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why Ready is what it is"
    ),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.secretExpiry.expiresAt",
        description = "When the client secret expires"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MicrosoftMailIntegrationSpec {
    /// Directory (tenant) ID of the Microsoft Entra tenant that holds the app registration: the
    /// GUID shown as "Directory (tenant) ID" in the portal, or one of the tenant's verified
    /// domains (contoso.onmicrosoft.com). `common`, `organizations` and `consumers` are not
    /// tenants and are refused.
    #[x_kube(
        validation = Rule::new(format!("self.matches('{GUID_RE}') || self.matches('{DOMAIN_RE}')")).message("tenantId must be the directory (tenant) ID GUID or a verified domain such as contoso.onmicrosoft.com"),
        validation = Rule::new("!self.matches('^(?i)(common|organizations|consumers)$')").message("tenantId must name a real tenant: common, organizations and consumers cannot request application tokens")
    )]
    #[schemars(length(min = 1, max = 253))]
    pub tenant_id: String,

    /// Application (client) ID of the app registration, a GUID ("Application (client) ID" in
    /// the portal's app overview).
    #[x_kube(validation = Rule::new(format!("self.matches('{GUID_RE}')")).message("clientId must be the Application (client) ID, a GUID such as 11111111-2222-3333-4444-555555555555"))]
    #[schemars(length(max = 36))]
    pub client_id: String,

    /// The Kubernetes Secret, in this namespace, that holds the client secret Value (not the
    /// Secret ID). The operator only reads it.
    pub client_secret_ref: SecretKeyRef,

    /// Microsoft cloud the tenant lives in. Selects the authority (login) and Graph hosts.
    #[serde(default)]
    pub cloud: Cloud,

    /// Overrides the authority host of the chosen cloud, e.g. for a private or sovereign
    /// endpoint. https, or http for loopback addresses only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(HOST_URL_RULE).message("authorityHost must be an https:// URL (http:// only for localhost)"))]
    #[schemars(length(max = 512))]
    pub authority_host: Option<String>,

    /// Overrides the Microsoft Graph host of the chosen cloud. https, or http for loopback
    /// addresses only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(HOST_URL_RULE).message("graphHost must be an https:// URL (http:// only for localhost)"))]
    #[schemars(length(max = 512))]
    pub graph_host: Option<String>,

    /// When the client secret expires and when to warn about it.
    #[serde(default)]
    pub secret_expiry: SecretExpiry,

    /// How often Microsoft is asked again whether the credentials still work.
    #[serde(default)]
    pub validation: ValidationSettings,

    /// NocoBase Deployments in this namespace that receive the validated configuration as
    /// environment variables. Empty: validate and track expiry only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub targets: Vec<Target>,

    /// Inject credentials Microsoft has not yet confirmed when it cannot be reached before
    /// the first validation (off by default: nothing unverified reaches NocoBase). Credentials
    /// Microsoft rejected are never injected.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inject_unverified: bool,

    /// Also keep NocoBase's "Variables and secrets" in step through its API, so the email
    /// manager's Microsoft settings can reference {{$env.MICROSOFT_CLIENT_ID}} and friends and
    /// a rotation reaches NocoBase without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nocobase: Option<NocoBaseSync>,

    /// Zero-touch rotation: create the next client secret through Microsoft Graph before
    /// the current one expires, prove it works, deliver it, and remove the old one only once
    /// every consumer uses the new one. With rotation enabled, the Secret named by
    /// clientSecretRef belongs to the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationSettings>,
}

/// When and how the operator rotates the client secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.lifetime) || !has(self.rotateBefore) || !self.lifetime.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') || !self.rotateBefore.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self.lifetime) > duration(self.rotateBefore)").message("lifetime must be longer than rotateBefore, or every new secret would be due for rotation at once"))]
pub struct RotationSettings {
    /// Rotate the client secret automatically (off by default).
    #[serde(default)]
    pub enabled: bool,
    /// Start a rotation this long before the secret in use expires (a Go duration; default
    /// 1080h = 45 days, so the 30/7/1-day warnings fire only when rotation is stuck).
    #[serde(default = "default_rotate_before")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) > duration('0s')").message("rotateBefore must be a positive duration such as 1080h"))]
    pub rotate_before: String,
    /// Lifetime of each new secret: its endDateTime is creation + lifetime (default 4320h =
    /// 180 days). A tenant app-management policy may refuse long lifetimes.
    #[serde(default = "default_lifetime")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) > duration('0s')").message("lifetime must be a positive duration such as 4320h"))]
    pub lifetime: String,
    /// How long the old secret stays valid after the new one reached every consumer
    /// (default 24h, at least 1m).
    #[serde(default = "default_retire_after")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) >= duration('1m')").message("retireAfter must be a duration of at least 1m, such as 24h"))]
    pub retire_after: String,
}

impl Default for RotationSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            rotate_before: default_rotate_before(),
            lifetime: default_lifetime(),
            retire_after: default_retire_after(),
        }
    }
}

fn default_rotate_before() -> String {
    DEFAULT_ROTATE_BEFORE.to_owned()
}
fn default_lifetime() -> String {
    DEFAULT_LIFETIME.to_owned()
}
fn default_retire_after() -> String {
    DEFAULT_RETIRE_AFTER.to_owned()
}

/// Where and how to write the variables into NocoBase.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NocoBaseSync {
    /// NocoBase's base URL as the operator reaches it, usually its Service, e.g.
    /// http://nocobase.nocobase.svc.cluster.local (the API is under /api/).
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+(/[^?#]*)?$')").message("url must be an http:// or https:// URL without query or fragment"))]
    pub url: String,

    /// Secret in this namespace holding a NocoBase API key (Settings > API keys) with a
    /// role allowed to manage Variables and secrets.
    pub api_key_secret_ref: ApiKeyRef,

    /// The app of a multi-app NocoBase (sent as the X-App header). Empty: the main app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub app: Option<String>,

    /// Names of the variables to keep.
    #[serde(default)]
    pub variables: VariableNames,

    /// Let the operator overwrite variables of these names that exist in NocoBase and that
    /// it did not create (off by default: such a variable may be somebody else's, and the
    /// sync stops with reason VariableExists). Adopted variables are kept up to date but
    /// never deleted by a cleanup.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt_existing: bool,

    /// On deletion of the integration, delete the operator's own variables from NocoBase
    /// (off by default: nothing in NocoBase is ever deleted unless asked).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_on_cleanup: bool,

    /// With deleteOnCleanup: how long a deletion keeps retrying while NocoBase is
    /// unreachable, restarting or overloaded, before it gives up (with a Warning Event) and
    /// lets the integration go. A positive duration of at most 24h, such as 10m (default),
    /// 30s or 1h.
    #[serde(default = "default_cleanup_timeout")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) > duration('0s') && duration(self) <= duration('24h')").message("cleanupTimeout must be a positive duration of at most 24h, such as 10m"))]
    pub cleanup_timeout: String,

    /// The address users open NocoBase at (often not the in-cluster url), e.g.
    /// https://crm.example.com. With it, the operator checks that the app registration has
    /// the Web redirect URI the email manager uses: {publicUrl}{oauthCallbackPath}
    /// ({publicUrl}/apps/{app}{oauthCallbackPath} for a sub-application).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+(/[^?#]*)?$')").message("publicUrl must be an http:// or https:// URL without query or fragment"))]
    pub public_url: Option<String>,

    /// The path of the email manager's OAuth callback under publicUrl (and
    /// /apps/{app} for a sub-application). Default /admin/settings/mail/oauth2, the path
    /// NocoBase 2.2 serves it at (its modern client maps the callback back to the root,
    /// without /v/).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^/[^?#]*$')").message("oauthCallbackPath must start with / and hold no query or fragment"))]
    pub oauth_callback_path: Option<String>,

    /// Also write the client ID and the client secret into the email manager's own
    /// settings (its "Email settings" page, which does not read {{$env.NAME}} variables):
    /// the path that reaches the mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_settings: Option<MailSettings>,
}

/// Default of `spec.nocobase.cleanupTimeout`.
pub const DEFAULT_CLEANUP_TIMEOUT: &str = "10m";

fn default_cleanup_timeout() -> String {
    DEFAULT_CLEANUP_TIMEOUT.to_owned()
}

/// Where the email manager keeps its Microsoft settings, and whether to write them.
/// The defaults are the best knowledge of the email manager's tables (a commercial plugin
/// whose field names are not published): confirm them on your NocoBase (README).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MailSettings {
    /// Write the settings (off by default: nothing is written until asked).
    #[serde(default)]
    pub enabled: bool,

    /// The collection (table) holding the settings records.
    #[serde(default = "default_mail_collection")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(format!("self.matches('{NOCOBASE_NAME_RE}')")).message("collection must be a NocoBase collection name: letters, digits and _, not starting with a digit"))]
    pub collection: String,

    /// Field values that pick the one record holding the Microsoft settings (all must be
    /// equal). Empty: the collection must hold exactly one record.
    #[serde(default = "default_mail_match", rename = "match")]
    #[schemars(extend("maxProperties" = 8, "additionalProperties" = {"type": "string", "maxLength": 256}))]
    #[x_kube(validation = Rule::new(format!("self.all(d, d.matches('{NOCOBASE_NAME_RE}') && size(d) <= 63)")).message("match keys must be NocoBase field names (letters, digits and _, at most 63)"))]
    pub match_fields: std::collections::BTreeMap<String, String>,

    /// Record field that receives each value: a field name, or a path into a JSON field
    /// (`options.clientSecret`; a dot inside a key is written `\.`).
    #[serde(default)]
    pub fields: MailFields,

    /// Create a key of a field path that the record's JSON field does not have yet (off
    /// by default: a missing key is reported, MailSettingsFieldUnknown, and nothing is
    /// written).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_missing_keys: bool,

    /// On deletion of the integration, empty the fields the operator wrote (off by
    /// default: removing them stops mail for every user).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_on_cleanup: bool,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            collection: default_mail_collection(),
            match_fields: default_mail_match(),
            fields: MailFields::default(),
            create_missing_keys: false,
            clear_on_cleanup: false,
        }
    }
}

/// Names of the record fields the operator writes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.clientId != self.clientSecret").message("clientId and clientSecret must be two different fields"))]
pub struct MailFields {
    /// Field receiving the Application (client) ID, or a path into a JSON field
    /// (options.clientId). A flat name the collection does not have at the top level is
    /// looked for inside the record's JSON field options.
    #[serde(default = "default_mail_field_client_id")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", mail_path_cel())).message(MAIL_PATH_MESSAGE))]
    pub client_id: String,
    /// Field receiving the client secret Value, or a path into a JSON field
    /// (options.clientSecret).
    #[serde(default = "default_mail_field_client_secret")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", mail_path_cel())).message(MAIL_PATH_MESSAGE))]
    pub client_secret: String,
}

impl Default for MailFields {
    fn default() -> Self {
        Self {
            client_id: default_mail_field_client_id(),
            client_secret: default_mail_field_client_secret(),
        }
    }
}

const MAIL_PATH_MESSAGE: &str = "fields are a field name (letters, digits and _, not starting with a digit), optionally followed by .keys inside a JSON field; a dot inside a key is written \\.";

/// [`crate::mailsettings::path::PATH_RE`] inside a single-quoted CEL string: every
/// backslash doubled.
fn mail_path_cel() -> String {
    crate::mailsettings::path::PATH_RE.replace('\\', "\\\\")
}

fn default_mail_collection() -> String {
    DEFAULT_MAIL_COLLECTION.to_owned()
}
fn default_mail_match() -> std::collections::BTreeMap<String, String> {
    [(
        DEFAULT_MAIL_MATCH.0.to_owned(),
        DEFAULT_MAIL_MATCH.1.to_owned(),
    )]
    .into()
}
fn default_mail_field_client_id() -> String {
    DEFAULT_MAIL_FIELD_CLIENT_ID.to_owned()
}
fn default_mail_field_client_secret() -> String {
    DEFAULT_MAIL_FIELD_CLIENT_SECRET.to_owned()
}

/// A key of a Secret holding a NocoBase API key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[serde(default = "default_api_key_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_api_key_key() -> String {
    "api-key".to_owned()
}

/// NocoBase variable names: client ID and tenant ID as plain variables, the client secret
/// as an encrypted secret variable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.clientId != self.clientSecret && self.clientId != self.tenantId && self.clientSecret != self.tenantId").message("clientId, clientSecret and tenantId must be three different variable names"))]
pub struct VariableNames {
    /// Plain variable holding the Application (client) ID.
    #[serde(default = "default_env_client_id")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z][A-Za-z0-9_]*$')").message("NocoBase variable names start with a letter and hold letters, digits and _"))]
    pub client_id: String,
    /// Plain variable holding the Directory (tenant) ID.
    #[serde(default = "default_env_tenant_id")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z][A-Za-z0-9_]*$')").message("NocoBase variable names start with a letter and hold letters, digits and _"))]
    pub tenant_id: String,
    /// Secret (encrypted) variable holding the client secret.
    #[serde(default = "default_env_client_secret")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z][A-Za-z0-9_]*$')").message("NocoBase variable names start with a letter and hold letters, digits and _"))]
    pub client_secret: String,
}

impl Default for VariableNames {
    fn default() -> Self {
        Self {
            client_id: default_env_client_id(),
            tenant_id: default_env_tenant_id(),
            client_secret: default_env_client_secret(),
        }
    }
}

/// A key of a Secret in the integration's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret whose value is the client secret.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')").message("key must consist of alphanumeric characters, '-', '_' or '.'"))]
    pub key: String,
}

fn default_secret_key() -> String {
    DEFAULT_SECRET_KEY.to_owned()
}

/// A Microsoft cloud, which fixes the login and Graph hosts.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Cloud {
    /// Microsoft Entra ID global service: login.microsoftonline.com, graph.microsoft.com.
    #[default]
    AzurePublic,
    /// Azure US Government: login.microsoftonline.us, graph.microsoft.us.
    AzureUSGovernment,
    /// Azure operated by 21Vianet: login.chinacloudapi.cn, microsoftgraph.chinacloudapi.cn.
    AzureChina,
}

impl Cloud {
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::AzurePublic => "https://login.microsoftonline.com",
            Cloud::AzureUSGovernment => "https://login.microsoftonline.us",
            Cloud::AzureChina => "https://login.chinacloudapi.cn",
        }
    }

    pub fn graph_host(self) -> &'static str {
        match self {
            Cloud::AzurePublic => "https://graph.microsoft.com",
            Cloud::AzureUSGovernment => "https://graph.microsoft.us",
            Cloud::AzureChina => "https://microsoftgraph.chinacloudapi.cn",
        }
    }
}

impl std::fmt::Display for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cloud::AzurePublic => "AzurePublic",
            Cloud::AzureUSGovernment => "AzureUSGovernment",
            Cloud::AzureChina => "AzureChina",
        })
    }
}

/// Expiry of the client secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretExpiry {
    /// When the client secret expires, RFC 3339 (the "Expires" column of "Certificates &
    /// secrets", e.g. 2027-05-31T00:00:00Z). Wins over what Graph reports. (A date-time
    /// string: the API server checks the format and CEL sees it as a timestamp.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"), length(max = 64))]
    pub expires_at: Option<String>,

    /// How long before expiry to warn, as durations (720h = 30 days). Each window crossed
    /// raises a Warning Event once and sets the SecretExpiring condition.
    #[serde(default = "default_warn_before")]
    #[schemars(length(min = 1, max = 10), inner(length(max = 32)))]
    #[x_kube(validation = Rule::new("self.all(d, d.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(d) > duration('0s'))").message("warnBefore entries must be positive durations such as 720h, 168h or 24h"))]
    pub warn_before: Vec<String>,

    /// Read the secret's end date from Microsoft Graph (needs the Application.Read.All
    /// application permission with admin consent). Without it, state expiresAt.
    #[serde(default = "default_true")]
    pub discover_from_graph: bool,
}

impl Default for SecretExpiry {
    fn default() -> Self {
        Self {
            expires_at: None,
            warn_before: default_warn_before(),
            discover_from_graph: true,
        }
    }
}

fn default_warn_before() -> Vec<String> {
    DEFAULT_WARN_BEFORE
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

fn default_true() -> bool {
    true
}

/// Periodic re-validation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ValidationSettings {
    /// How often to ask Microsoft again whether the credentials still work (a Go duration,
    /// e.g. 6h). Changes to the Secret or the spec are validated at once regardless.
    #[serde(default = "default_interval")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) >= duration('1m')").message("interval must be a duration of at least 1m, such as 6h"))]
    #[schemars(length(max = 32))]
    pub interval: String,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        Self {
            interval: default_interval(),
        }
    }
}

fn default_interval() -> String {
    DEFAULT_VALIDATION_INTERVAL.to_owned()
}

/// A NocoBase Deployment (or several, by label) that receives the configuration.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.deploymentName) != has(self.deploymentSelector)").message("set exactly one of deploymentName or deploymentSelector"))]
#[x_kube(validation = Rule::new("!has(self.deploymentSelector) || (has(self.deploymentSelector.matchLabels) && size(self.deploymentSelector.matchLabels) > 0) || (has(self.deploymentSelector.matchExpressions) && size(self.deploymentSelector.matchExpressions) > 0)").message("deploymentSelector must not be empty: an empty selector would select every Deployment of the namespace"))]
pub struct Target {
    /// Name of a Deployment in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub deployment_name: Option<String>,

    /// Label selector for Deployments in this namespace; it must hold at least one label or
    /// expression (an empty selector would select every Deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_selector: Option<LabelSelector>,

    /// Containers of the pod template that get the variables. Empty: all containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63)))]
    pub containers: Vec<String>,

    /// Names of the environment variables to set.
    #[serde(default)]
    pub env: EnvNames,

    /// OnChange (default) rolls the pods when the validated configuration changes; Manual
    /// leaves restarts to you.
    #[serde(default)]
    pub rollout: Rollout,
}

/// Environment variable names for the injected values.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.clientId != self.clientSecret && self.clientId != self.tenantId && self.clientSecret != self.tenantId").message("clientId, clientSecret and tenantId must be three different variable names"))]
pub struct EnvNames {
    /// Variable that receives the Application (client) ID.
    #[serde(default = "default_env_client_id")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new(format!("self.matches('{ENV_NAME_RE}')")).message("must be a valid environment variable name (letters, digits, _; not starting with a digit)"))]
    pub client_id: String,
    /// Variable that receives the client secret (through a secretKeyRef, never as a value).
    #[serde(default = "default_env_client_secret")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new(format!("self.matches('{ENV_NAME_RE}')")).message("must be a valid environment variable name (letters, digits, _; not starting with a digit)"))]
    pub client_secret: String,
    /// Variable that receives the Directory (tenant) ID.
    #[serde(default = "default_env_tenant_id")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new(format!("self.matches('{ENV_NAME_RE}')")).message("must be a valid environment variable name (letters, digits, _; not starting with a digit)"))]
    pub tenant_id: String,
}

impl Default for EnvNames {
    fn default() -> Self {
        Self {
            client_id: default_env_client_id(),
            client_secret: default_env_client_secret(),
            tenant_id: default_env_tenant_id(),
        }
    }
}

fn default_env_client_id() -> String {
    DEFAULT_ENV_CLIENT_ID.to_owned()
}
fn default_env_client_secret() -> String {
    DEFAULT_ENV_CLIENT_SECRET.to_owned()
}
fn default_env_tenant_id() -> String {
    DEFAULT_ENV_TENANT_ID.to_owned()
}

/// When injected pods restart.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rollout {
    /// Roll the pods when, and only when, the validated configuration changes.
    #[default]
    OnChange,
    /// Update the Deployment's variables but never restart pods; restart them yourself.
    Manual,
}

/// Observed state, written by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MicrosoftMailIntegrationStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, CredentialsValid, SecretExpiring and Injected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// What is known about the client secret's expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_expiry: Option<SecretExpiryStatus>,

    /// The last verdict from Microsoft (Valid or Rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_validation: Option<LastValidation>,

    /// The last attempt that reached no verdict (Microsoft throttled, down or unreachable),
    /// while it is the latest news; cleared by the next verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_unavailable: Option<LastUnavailable>,

    /// Where the validated configuration was injected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub injected: Vec<InjectedTarget>,

    /// What the operator last wrote into NocoBase's Variables and secrets (fingerprints
    /// only), and which variables it created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nocobase: Option<crate::nocobase::SyncedState>,

    /// What the operator last wrote into the email manager's settings (fingerprints only):
    /// which record, which fields, and the credentials fingerprint they hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_settings: Option<MailSettingsStatus>,
    /// Where the secret rotation stands (only with spec.rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
}

/// A step of the rotation.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RotationPhase {
    /// No rotation in flight.
    #[default]
    Idle,
    /// An attempt ID is recorded; the new secret is being created through Graph and stored.
    Creating,
    /// The new secret is stored; Microsoft is asked until it accepts it (up to 10 minutes).
    Validating,
    /// The new secret works and goes out to the managed Secret, Deployments and NocoBase.
    Delivering,
    /// Every consumer uses the new secret; the old one is removed at retireAt.
    Retiring,
    /// The attempt failed; the old secret is still in place and in use. Retried with backoff.
    Failed,
}

/// Progress of the client-secret rotation. Secret values are never recorded: key IDs,
/// times and keyed fingerprints only.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// Idle, Creating, Validating, Delivering, Retiring or Failed.
    pub phase: RotationPhase,
    /// ID of the attempt in flight; also in the new credential's displayName in Entra, so a
    /// credential created just before a crash is found and removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
    /// keyId of the credential this attempt created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_key_id: Option<String>,
    /// keyId of the credential being replaced, when it could be identified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_key_id: Option<String>,
    /// When the old credential is removed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<String>,
    /// When the last rotation completed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<String>,
    /// What is happening or what it waits for, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why the last attempt failed or why the rotation waits, in one CamelCase word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the current phase began (RFC 3339): bounds validation and rollouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<String>,
    /// Consecutive failed attempts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: i32,
    /// When a failed rotation is tried again (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// Since when rotation has been failing (RFC 3339); cleared by a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    /// The rotate-requested-at annotation value last acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_request: Option<String>,
    /// Keyed fingerprint of the secret value before this attempt (tells whether the new
    /// value reached the Secret before a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_secret_fingerprint: Option<String>,
    /// Keyed fingerprint of the value this attempt created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_secret_fingerprint: Option<String>,
    /// endDateTime of the secret this attempt created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_secret_expires_at: Option<String>,
    /// The lifetime a tenant policy refused (PolicyRefused): not tried again until
    /// spec.rotation.lifetime changes or a rotation is requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_lifetime: Option<String>,
    /// Keyed fingerprint of the delivered value the operator created last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_secret_fingerprint: Option<String>,
    /// Its endDateTime: the expiry of the secret in use while the Secret holds that value,
    /// whatever spec.secretExpiry.expiresAt (which describes the secret you gave) says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_secret_expires_at: Option<String>,
    /// The `retire-approved-at` value the operator last saw on the integration, and when
    /// it first saw it (RFC 3339): an approval counts only when seen after delivery began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_seen: Option<String>,
    /// When the operator first saw `approvalSeen` (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_seen_at: Option<String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Where an expiry date came from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpirySource {
    /// spec.secretExpiry.expiresAt.
    Spec,
    /// The app registration's passwordCredentials in Microsoft Graph.
    Graph,
}

/// Expiry of the client secret in use.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretExpiryStatus {
    /// When the client secret expires (RFC 3339). Absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Spec or Graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ExpirySource>,
    /// Warning windows (from warnBefore) already announced for this credential, so each is
    /// announced once, also across operator restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows_announced: Vec<String>,
}

/// The four answers a validation can give.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Microsoft issued a token for these credentials.
    Valid,
    /// Microsoft definitively refused them.
    #[default]
    Rejected,
    /// Microsoft could not be asked or did not answer usefully; says nothing about the
    /// credentials and is never treated as a rejection.
    Unavailable,
    /// Wrong on its face; nothing was sent.
    InvalidInput,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Valid => "Valid",
            Outcome::Rejected => "Rejected",
            Outcome::Unavailable => "Unavailable",
            Outcome::InvalidInput => "InvalidInput",
        }
    }

    /// Exit status of `check`: 0 valid, 1 rejected, 2 invalid input, 3 unavailable.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Valid => 0,
            Outcome::Rejected => 1,
            Outcome::InvalidInput => 2,
            Outcome::Unavailable => 3,
        }
    }
}

impl<'de> Deserialize<'de> for Outcome {
    /// Status is only ever written with `Valid` or `Rejected`; anything else read back
    /// (an edited status) counts as not accepted, never as a reason to fail the reconcile.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "Valid" => Outcome::Valid,
            "Unavailable" => Outcome::Unavailable,
            "InvalidInput" => Outcome::InvalidInput,
            _ => Outcome::Rejected,
        })
    }
}

/// The last validation against Microsoft.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastValidation {
    /// When Microsoft answered (RFC 3339).
    pub time: String,
    /// Valid, Rejected, Unavailable or InvalidInput.
    // Typed in Rust, a plain string on the wire and in the schema (no CRD change).
    #[schemars(with = "String")]
    pub outcome: Outcome,
    /// Why, in one CamelCase word; absent when valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The AADSTS error code Microsoft returned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aadsts_code: Option<i64>,
    /// What the answer means and the next step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Delegated Graph permissions the NocoBase email manager needs that the app
    /// registration lacks (only when Graph could be read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_permissions: Vec<String>,
    /// The app registration's signInAudience (AzureADMyOrg, AzureADMultipleOrgs,
    /// AzureADandPersonalMicrosoftAccount, PersonalMicrosoftAccount), when Graph could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_in_audience: Option<String>,
    /// The app registration's Web redirect URIs (web.redirectUris); absent when Graph could
    /// not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_redirect_uris: Option<Vec<String>>,
    /// When the secret expires according to Microsoft Graph, if it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_expires_at: Option<String>,
    /// Why Graph gave no expiry, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_note: Option<String>,
    /// Keyed SHA-256 fingerprint (HMAC keyed by the operator's own key, per resource) of
    /// tenant, client ID, hosts and secret that were validated; tells the operator whether
    /// the credentials changed without keeping the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_fingerprint: Option<String>,
}

/// An attempt that could not reach a verdict.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastUnavailable {
    /// When it was tried (RFC 3339).
    pub time: String,
    /// Throttled, ServiceUnavailable, Timeout, NetworkError, TlsError or UnexpectedResponse.
    pub reason: String,
    /// What happened.
    pub message: String,
    /// Consecutive attempts without a verdict.
    pub failures: i32,
    /// When the next attempt is due (RFC 3339).
    pub retry_at: String,
    /// Fingerprint of the credentials tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_fingerprint: Option<String>,
}

/// One Deployment that carries the configuration.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InjectedTarget {
    /// Deployment name.
    pub deployment: String,
    /// Containers that received the variables.
    #[serde(default)]
    pub containers: Vec<String>,
    /// Fingerprint of the injected configuration (also on the pod template when rollout is
    /// OnChange).
    pub fingerprint: String,
    /// OnChange or Manual.
    pub rollout: Rollout,
}

/// What the operator last wrote into the email manager's settings. No value: keyed
/// fingerprints only.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MailSettingsStatus {
    /// The collection written.
    pub collection: String,
    /// Primary key (`id`) of the record written.
    pub record: String,
    /// Field -> keyed fingerprint (HMAC-SHA256 keyed by the operator's own key, 128 bits) of
    /// the value the field holds since the operator's write or check.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fields: std::collections::BTreeMap<String, String>,
    /// The credentials fingerprint (as status.lastValidation.credentialsFingerprint) of
    /// the client ID and secret the settings hold: equal to it means the email manager
    /// has the credentials Microsoft last accepted.
    pub credentials_fingerprint: String,
    /// NocoBase's updatedAt of the record after the operator's last write or check, when
    /// the collection has timestamps: tells an edit made in NocoBase since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Fields whose value could not be confirmed by reading the record back (hidden from
    /// reads, as secret fields may be).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unconfirmed: Vec<String>,
}
