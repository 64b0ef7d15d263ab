//! NocoBase I/O: the REST API of "Variables and secrets" (`environmentVariables:list`,
//! `:create`, `:update`, `:destroy`) and `app:refresh`, with timeouts and the operator's TLS
//! settings. The only file that talks to NocoBase.
//!
//! Shapes (from the 2.2.15 npm packages, see `tests/fixtures/nocobase/SOURCES.md`):
//! - `GET /api/environmentVariables:list` answers `{"data":[{name,type,value,createdAt,
//!   updatedAt}],"meta":{"updated":bool}}` (secret values blanked, plain values in clear);
//! - `POST /api/environmentVariables:create` takes an object or an array of
//!   `{name,type,value}` and answers `{"data":{..}}` or `{"data":[..]}` with the stored
//!   records, plain values **and secrets decrypted**;
//! - `POST /api/environmentVariables:update?filterByTk=NAME` answers `{"data":[..]}` (the
//!   updated records, values in clear; an empty array when no such variable exists);
//! - `POST /api/environmentVariables:destroy?filterByTk=NAME` answers `{"data":<count>}`;
//! - `POST /api/app:refresh` answers `{}` and restarts the application in-process.
//!
//! Response bodies are read into types that skip `value`; they are never logged, and no
//! error message quotes them. The API key travels only in a sensitive `Authorization`
//! header.

use std::fmt;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::reason;
use crate::http::{RequestObserver, TransportFailure};

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

/// A variable to write. `Debug` shows the value as `[REDACTED]`.
#[derive(Clone, Debug)]
pub struct VarWrite {
    pub name: String,
    pub kind: VarKind,
    pub value: SecretString,
}

/// A variable as NocoBase lists it: name and type only; the value is never kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub kind: VarKind,
    /// NocoBase's `updatedAt`, verbatim, when the listing carries it: tells a change made
    /// in NocoBase since the operator's last write.
    pub updated_at: Option<String>,
}

/// Why a NocoBase request failed. `message` is written for an administrator and never
/// holds the API key, a variable value, or any part of a response body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct SyncError {
    /// One of [`super::reason`].
    pub reason: &'static str,
    pub message: String,
    /// Whether trying again later may succeed without anybody changing anything.
    pub transient: bool,
}

impl SyncError {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        let transient = matches!(
            reason,
            reason::NOCOBASE_UNREACHABLE
                | reason::NOCOBASE_RESTARTING
                | reason::UNEXPECTED_RESPONSE
                | reason::VARIABLE_EXISTS
        );
        Self {
            reason,
            message: message.into(),
            transient,
        }
    }
}

/// Timeouts and TLS. No retries here: writes are not all idempotent, and the caller
/// requeues on a transient [`SyncError`].
#[derive(Clone)]
pub struct NocoBaseOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Extra PEM CA certificates trusted besides the system roots (a private CA in front
    /// of NocoBase, or a TLS-inspecting proxy).
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Called after every exchange with the action (`environmentVariables:list`, ...),
    /// the HTTP status (0 when none came back) and the duration.
    pub observer: Option<RequestObserver>,
    /// A client built once and shared (the controller's); `None`: built from the above.
    pub http: Option<reqwest::Client>,
    /// How long [`NocoBaseClient::wait_until_back`] waits, after the operator's own
    /// `app:refresh`, for NocoBase to answer again (about 1 s idle; 15 to 20 s seen on a busy
    /// 2-core machine).
    pub restart_wait: Duration,
}

impl Default for NocoBaseOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            ca_bundle_pem: None,
            observer: None,
            http: None,
            restart_wait: Duration::from_secs(45),
        }
    }
}

/// The NocoBase actions the operator calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    List,
    Create,
    Update,
    Destroy,
    Refresh,
    /// `swagger:get?ns=collections/<name>` (the API-doc plugin): a collection's fields.
    Swagger,
    /// `<collection>:list` of the email manager's settings.
    RecordList,
    /// `<collection>:update` of the email manager's settings.
    RecordUpdate,
}

impl Op {
    /// The action, also the label of the request metrics (so a fixed set: record actions
    /// are labelled by kind, not by collection).
    pub(super) fn action(self) -> &'static str {
        match self {
            Op::List => "environmentVariables:list",
            Op::Create => "environmentVariables:create",
            Op::Update => "environmentVariables:update",
            Op::Destroy => "environmentVariables:destroy",
            Op::Refresh => "app:refresh",
            Op::Swagger => "swagger:get",
            Op::RecordList => "records:list",
            Op::RecordUpdate => "records:update",
        }
    }

    fn method(self) -> reqwest::Method {
        match self {
            Op::List | Op::Swagger | Op::RecordList => reqwest::Method::GET,
            _ => reqwest::Method::POST,
        }
    }

    fn on_variables(self) -> bool {
        matches!(self, Op::List | Op::Create | Op::Update | Op::Destroy)
    }
}

/// Client of one NocoBase application's API. `Debug` never shows the API key.
#[derive(Clone)]
pub struct NocoBaseClient {
    http: reqwest::Client,
    /// `{base}/api/`, always ending with a slash.
    api: url::Url,
    /// The base URL as given (without credentials), for messages.
    shown: String,
    api_key: SecretString,
    app: Option<String>,
    observer: Option<RequestObserver>,
    request_timeout: Duration,
    restart_wait: Duration,
}

impl fmt::Debug for NocoBaseClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NocoBaseClient")
            .field("api", &self.api.as_str())
            .field("app", &self.app)
            .field("api_key", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct WireVar<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    value: &'a str,
}

#[derive(Serialize)]
struct WireValue<'a> {
    value: &'a str,
}

/// A listed or returned record, without its value.
#[derive(Deserialize)]
struct RecordHead {
    name: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(rename = "updatedAt", default)]
    updated_at: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<RecordHead>),
    One(RecordHead),
}

/// `{"errors":[{"message":..,"code":..}]}`: NocoBase's error handler.
#[derive(Deserialize)]
struct ErrorsBody {
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

/// `{"error":{"code":..,"status":..}}`: NocoBase's gateway (app not found, maintaining).
#[derive(Deserialize)]
struct GatewayBody {
    error: GatewayError,
}

#[derive(Deserialize)]
struct GatewayError {
    #[serde(default)]
    code: Option<String>,
    /// `true` while the application loads, restarts or runs a command (`app:refresh`).
    #[serde(default)]
    maintaining: Option<bool>,
}

/// Gateway codes (`@nocobase/server` `lib/gateway/errors.js`, all 503 with `maintaining`)
/// of an application that comes back by itself: running a command such as `refresh`,
/// preparing, starting, initialising, or just done with a command. Not among them:
/// `APP_STOPPED`, `APP_ERROR`, `COMMAND_ERROR`, `APP_INITIALIZED` (waits for an install),
/// which need somebody to act.
const COMING_BACK: &[&str] = &[
    "APP_COMMANDING",
    "APP_PREPARING",
    "APP_STARTING",
    "APP_INITIALIZING",
    "COMMAND_END",
];

impl NocoBaseClient {
    /// `base_url` is NocoBase's root (`http://nocobase.nocobase.svc:13000`, or with a path
    /// prefix when NocoBase is served under one); a trailing `/api` is accepted. `app`
    /// selects another application of a multi-app deployment (header `X-App`).
    pub fn new(
        base_url: &str,
        api_key: SecretString,
        app: Option<String>,
        opts: NocoBaseOptions,
    ) -> Result<Self, String> {
        let (url, shown) = api_url(base_url)?;
        let key = api_key.expose_secret().trim();
        if key.is_empty() {
            return Err("the NocoBase API key is empty".into());
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(
                "the NocoBase API key contains whitespace or control characters inside it; copy it again"
                    .into(),
            );
        }
        let api_key = SecretString::from(key.to_owned());

        let app = app.map(|a| a.trim().to_owned()).filter(|a| !a.is_empty());
        if let Some(a) = &app
            && !a.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(format!(
                "the NocoBase application name {a:?} is not usable in the X-App header (printable ASCII without spaces only)"
            ));
        }

        let http = match opts.http {
            Some(shared) => shared,
            None => crate::http::client(
                opts.connect_timeout,
                opts.request_timeout,
                opts.ca_bundle_pem.as_deref(),
            )?,
        };
        Ok(Self {
            http,
            api: url,
            shown,
            api_key,
            app,
            observer: opts.observer,
            request_timeout: opts.request_timeout,
            restart_wait: opts.restart_wait,
        })
    }

    /// The NocoBase root URL as configured, for messages.
    pub fn base_url(&self) -> &str {
        &self.shown
    }

    /// The application selected with `X-App`, if any.
    pub fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }

    /// Every variable's name and type (`GET environmentVariables:list?paginate=false`).
    pub async fn list(&self) -> Result<Vec<Listed>, SyncError> {
        let body = self.call(Op::List, &[("paginate", "false")], None).await?;
        let env: Envelope<Vec<RecordHead>> =
            serde_json::from_slice(&body).map_err(|_| self.unreadable(Op::List, 200))?;
        Ok(env
            .data
            .into_iter()
            .map(|r| Listed {
                kind: VarKind::from_nocobase(r.kind.as_deref()),
                updated_at: r.updated_at.and_then(timestamp),
                name: r.name,
            })
            .collect())
    }

    /// Creates the variables in one request (`POST environmentVariables:create` with an
    /// array). NocoBase creates them one by one without a transaction: after a failure some
    /// may exist; list again to know.
    pub async fn create(&self, vars: &[VarWrite]) -> Result<(), SyncError> {
        if vars.is_empty() {
            return Ok(());
        }
        let wire: Vec<WireVar<'_>> = vars
            .iter()
            .map(|v| WireVar {
                name: &v.name,
                kind: v.kind.as_str(),
                value: v.value.expose_secret(),
            })
            .collect();
        let body = serde_json::to_vec(&wire).map_err(|_| {
            SyncError::new(
                reason::UNEXPECTED_RESPONSE,
                "the variables could not be encoded as JSON",
            )
        })?;
        let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
        let answer = self.call(Op::Create, &[], Some((body, &names))).await?;
        let returned = match serde_json::from_slice::<Envelope<OneOrMany>>(&answer) {
            Ok(Envelope {
                data: OneOrMany::Many(v),
            }) => v,
            Ok(Envelope {
                data: OneOrMany::One(r),
            }) => vec![r],
            Err(_) => return Err(self.unreadable(Op::Create, 200)),
        };
        let mut got: Vec<&str> = returned.iter().map(|r| r.name.as_str()).collect();
        let mut want = names.clone();
        got.sort_unstable();
        want.sort_unstable();
        if got != want {
            return Err(SyncError::new(
                reason::UNEXPECTED_RESPONSE,
                format!(
                    "NocoBase at {} answered environmentVariables:create for {} with {} record(s) of other names; the operator will list the variables again at the next sync",
                    self.shown,
                    names.join(", "),
                    returned.len()
                ),
            ));
        }
        Ok(())
    }

    /// Replaces the value of an existing variable
    /// (`POST environmentVariables:update?filterByTk=NAME`, body `{value}`). The type is
    /// never sent: the operator does not change a variable's type.
    pub async fn update(&self, var: &VarWrite) -> Result<(), SyncError> {
        let body = serde_json::to_vec(&WireValue {
            value: var.value.expose_secret(),
        })
        .map_err(|_| {
            SyncError::new(
                reason::UNEXPECTED_RESPONSE,
                "the value could not be encoded as JSON",
            )
        })?;
        let names = [var.name.as_str()];
        let answer = self
            .call(
                Op::Update,
                &[("filterByTk", &var.name)],
                Some((body, &names)),
            )
            .await?;
        let returned = match serde_json::from_slice::<Envelope<OneOrMany>>(&answer) {
            Ok(Envelope {
                data: OneOrMany::Many(v),
            }) => v,
            Ok(Envelope {
                data: OneOrMany::One(r),
            }) => vec![r],
            Err(_) => return Err(self.unreadable(Op::Update, 200)),
        };
        if !returned.iter().any(|r| r.name == var.name) {
            return Err(SyncError::new(
                reason::UNEXPECTED_RESPONSE,
                format!(
                    "NocoBase at {} updated no variable named {}: it was deleted after the operator listed the variables; it will be created again at the next sync",
                    self.shown, var.name
                ),
            ));
        }
        Ok(())
    }

    /// Deletes a variable (`POST environmentVariables:destroy?filterByTk=NAME`). Deleting
    /// a variable that does not exist succeeds.
    pub async fn destroy(&self, name: &str) -> Result<(), SyncError> {
        let body = self
            .call(
                Op::Destroy,
                &[("filterByTk", name)],
                Some((b"{}".to_vec(), &[name])),
            )
            .await?;
        serde_json::from_slice::<Envelope<serde_json::Value>>(&body)
            .map_err(|_| self.unreadable(Op::Destroy, 200))?;
        Ok(())
    }

    /// Applies changed variables (`POST app:refresh`): NocoBase answers at once and then
    /// restarts the application in-process (a few seconds of HTTP 503 "maintaining").
    pub async fn refresh(&self) -> Result<(), SyncError> {
        self.call(Op::Refresh, &[], Some((b"{}".to_vec(), &[])))
            .await?;
        Ok(())
    }

    /// After the operator's own `app:refresh`: lists the variables until NocoBase stops
    /// answering [`reason::NOCOBASE_RESTARTING`], polling with a small growing pause, for at
    /// most `restart_wait`. So the reconcile that the operator's own writes trigger finds
    /// NocoBase back instead of reporting it down. Any other answer ends the wait at once.
    pub async fn wait_until_back(&self) -> Result<Vec<Listed>, SyncError> {
        let deadline = Instant::now() + self.restart_wait;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.list().await {
                Err(e) if e.reason == reason::NOCOBASE_RESTARTING => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(e);
                    }
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    fn observe(&self, op: Op, status: u16, took: Duration) {
        if let Some(o) = &self.observer {
            o(op.action(), status, took);
        }
    }

    /// Sends one request; a 2xx answer gives its body, anything else a [`SyncError`].
    /// `write` is the JSON body and the variable names it concerns (for messages).
    async fn call(
        &self,
        op: Op,
        query: &[(&str, &str)],
        write: Option<(Vec<u8>, &[&str])>,
    ) -> Result<Vec<u8>, SyncError> {
        self.call_on(op, op.action(), query, write).await
    }

    /// [`Self::call`] on the action path `action` (`mailSettings:list`, ...), which may
    /// differ from the metrics label of `op`.
    pub(super) async fn call_on(
        &self,
        op: Op,
        action: &str,
        query: &[(&str, &str)],
        write: Option<(Vec<u8>, &[&str])>,
    ) -> Result<Vec<u8>, SyncError> {
        let mut url = self.api.clone();
        url.path_segments_mut()
            .expect("checked in new")
            .pop_if_empty()
            .push(action);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut req = self
            .http
            .request(op.method(), url)
            .bearer_auth(self.api_key.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            // Error messages are translated; English keeps their classification stable.
            .header("X-Locale", "en-US");
        if let Some(app) = &self.app {
            req = req.header("X-App", app);
        }
        let names: &[&str] = match write {
            Some((body, names)) => {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
                names
            }
            None => &[],
        };
        let t0 = Instant::now();
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.observe(op, 0, t0.elapsed());
                return Err(self.transport_failure(op, &e));
            }
        };
        let status = resp.status().as_u16();
        let body = crate::http::read_capped(resp, crate::http::MAX_BODY_BYTES).await;
        self.observe(op, status, t0.elapsed());
        let body = match body {
            Ok(b) => b,
            Err(crate::http::BodyError::Transport(e)) => return Err(self.transport_failure(op, &e)),
            Err(crate::http::BodyError::TooLarge) => {
                return Err(SyncError::new(
                    reason::UNEXPECTED_RESPONSE,
                    format!(
                        "NocoBase at {} answered {} with a body larger than 1 MiB, which no NocoBase answer is; it was not read. Check spec.nocobase.url",
                        self.shown,
                        op.action()
                    ),
                ));
            }
        };
        tracing::debug!(
            action = op.action(),
            status,
            app = self.app.as_deref(),
            "NocoBase answered"
        );
        if (200..300).contains(&status) {
            return Ok(body);
        }
        Err(self.classify(op, status, &body, names))
    }

    /// Reads a non-2xx answer. Only fixed codes (`INVALID_TOKEN`, `APP_NOT_FOUND`, ...) are
    /// quoted; NocoBase's messages are matched, never repeated.
    fn classify(&self, op: Op, status: u16, body: &[u8], names: &[&str]) -> SyncError {
        let errors = serde_json::from_slice::<ErrorsBody>(body)
            .map(|b| b.errors)
            .unwrap_or_default();
        let gateway = serde_json::from_slice::<GatewayBody>(body).ok();
        let maintaining = gateway
            .as_ref()
            .is_some_and(|b| b.error.maintaining == Some(true));
        let gateway_code = gateway.and_then(|b| b.error.code).filter(|c| is_code(c));
        let code = errors
            .iter()
            .filter_map(|e| e.code.as_deref())
            .find(|c| is_code(c))
            .map(str::to_owned)
            .or(gateway_code.clone());
        let code_note = code.as_deref().map_or(String::new(), |c| format!(" ({c})"));
        let gw = gateway_code.as_deref();
        if let Some((r, m)) =
            super::record_errors::classify(&self.shown, op.action(), status, gw, names)
        {
            return SyncError::new(r, m);
        }
        let action = op.action();
        let base = &self.shown;
        let in_app = self
            .app
            .as_deref()
            .map_or(String::new(), |a| format!(" in application {a:?}"));
        match status {
            401 => SyncError::new(
                reason::API_KEY_REJECTED,
                format!(
                    "NocoBase at {base} rejected the API key{code_note}: it is wrong, expired or revoked, or belongs to another NocoBase{in_app}. Create an API key in NocoBase (Settings > API keys, role root) and store it in the Secret named by spec.nocobase.apiKeySecretRef"
                ),
            ),
            403 => SyncError::new(
                reason::API_KEY_REJECTED,
                format!(
                    "NocoBase at {base} refused {action}{code_note}: the API key's role may not manage \"Variables and secrets\" or refresh the application{in_app}. Use an API key whose role has these system permissions (the root role has them)"
                ),
            ),
            404 if gateway_code.as_deref() == Some("APP_NOT_FOUND") => SyncError::new(
                reason::APP_NOT_FOUND,
                format!(
                    "NocoBase at {base} has no application named {:?} (spec.nocobase.app, sent as X-App). Correct the name, or leave it empty for the main application",
                    self.app.as_deref().unwrap_or("main")
                ),
            ),
            404 if op.on_variables() => SyncError::new(
                reason::PLUGIN_MISSING,
                format!(
                    "NocoBase at {base} has no {action} action{in_app}: the built-in \"Variables and secrets\" plugin (@nocobase/plugin-environment-variables) is not enabled, or spec.nocobase.url is not NocoBase's root URL. Enable the plugin in Settings > Plugin manager"
                ),
            ),
            400 if op == Op::Create || op == Op::Update => {
                self.bad_request(action, &errors, names, &code_note)
            }
            429 | 500..=599 => {
                let restarting = status == 503
                    && maintaining
                    && gateway_code
                        .as_deref()
                        .is_none_or(|c| COMING_BACK.contains(&c));
                self.unavailable(action, status, &code_note, restarting)
            }
            300..=399 => SyncError::new(
                reason::UNEXPECTED_RESPONSE,
                format!(
                    "NocoBase at {base} redirected {action} (HTTP {status}): spec.nocobase.url is probably not NocoBase's root URL (http vs https, host or path prefix)"
                ),
            ),
            _ => SyncError::new(
                reason::UNEXPECTED_RESPONSE,
                format!(
                    "NocoBase at {base} answered {action} with HTTP {status}{code_note}, which the operator does not expect. Check spec.nocobase.url and any proxy in front of NocoBase"
                ),
            ),
        }
    }

    /// HTTP 400 to a create or update: a duplicate name, a name NocoBase refuses, or
    /// something else (its messages are matched, never repeated).
    fn bad_request(
        &self,
        action: &str,
        errors: &[ErrorItem],
        names: &[&str],
        code_note: &str,
    ) -> SyncError {
        let base = &self.shown;
        let has = |needle: &str| {
            errors.iter().any(|e| {
                e.message
                    .as_deref()
                    .is_some_and(|m| m.to_ascii_lowercase().contains(needle))
            })
        };
        let names = names.join(", ");
        if has("already exists") || has("must be unique") || has("unique") {
            SyncError::new(
                reason::VARIABLE_EXISTS,
                format!(
                    "NocoBase at {base} already has a variable named {names}: it was created after the operator listed the variables. The next sync will take it into account"
                ),
            )
        } else if has("validation error") {
            SyncError::new(
                reason::INVALID_VARIABLE_NAME,
                format!(
                    "NocoBase at {base} refused the variable name {names}: a name starts with a letter and holds only letters, digits and underscores. Correct spec.nocobase.variables"
                ),
            )
        } else {
            SyncError::new(
                reason::UNEXPECTED_RESPONSE,
                format!(
                    "NocoBase at {base} refused {action} for {names} with HTTP 400 for a reason the operator does not recognise{code_note}; the NocoBase server log has the details"
                ),
            )
        }
    }

    /// HTTP 429 or 5xx: restarting (it comes back by itself within seconds), or down,
    /// overloaded or failing.
    fn unavailable(
        &self,
        action: &str,
        status: u16,
        code_note: &str,
        restarting: bool,
    ) -> SyncError {
        let base = &self.shown;
        if restarting {
            return SyncError::new(
                reason::NOCOBASE_RESTARTING,
                format!(
                    "NocoBase at {base} is restarting{code_note}: it answered {action} with HTTP 503 while it reloads its plugins (after app:refresh or a start). The operator asks again within seconds"
                ),
            );
        }
        let what = match status {
            429 => "asked to slow down",
            503 => "is starting, restarting or under maintenance",
            502 | 504 => "is not reachable behind its proxy",
            _ => "failed",
        };
        SyncError::new(
            reason::NOCOBASE_UNREACHABLE,
            format!(
                "NocoBase at {base} answered {action} with HTTP {status}{code_note}: it {what}. The operator will try again; if this lasts, check the NocoBase pods and their logs"
            ),
        )
    }

    /// A 2xx answer whose body is not what NocoBase sends.
    pub(super) fn unreadable(&self, op: Op, status: u16) -> SyncError {
        SyncError::new(
            reason::UNEXPECTED_RESPONSE,
            format!(
                "NocoBase at {} answered {} with HTTP {status} but not with NocoBase's JSON envelope: spec.nocobase.url probably points at something else than NocoBase's root URL (a web page, a proxy's login page)",
                self.shown,
                op.action()
            ),
        )
    }

    fn transport_failure(&self, op: Op, e: &reqwest::Error) -> SyncError {
        let base = &self.shown;
        let action = op.action();
        let message = match crate::http::transport_failure(e) {
            TransportFailure::Timeout => format!(
                "NocoBase at {base} did not answer {action} within {} s. Check that NocoBase is running and reachable from the operator (Service, NetworkPolicy, HTTPS_PROXY/NO_PROXY); the operator will try again",
                self.request_timeout.as_secs_f32()
            ),
            TransportFailure::Tls => format!(
                "the TLS connection to NocoBase at {base} failed: its certificate is not trusted or the handshake failed. Give the CA that signed it to the operator (the chart's caBundle value)"
            ),
            TransportFailure::Connect => format!(
                "the operator could not connect to NocoBase at {base} (DNS, connection refused, firewall). Check spec.nocobase.url, that the NocoBase Service has ready pods, NetworkPolicies and HTTPS_PROXY/NO_PROXY; the operator will try again"
            ),
            TransportFailure::Lost => format!(
                "the connection to NocoBase at {base} was lost during {action}; the operator will try again"
            ),
        };
        SyncError::new(reason::NOCOBASE_UNREACHABLE, message)
    }
}

/// `{base}/api/` from NocoBase's root URL (a trailing `/api` accepted), and the base as
/// shown in messages; or why the URL is refused.
fn api_url(base_url: &str) -> Result<(url::Url, String), String> {
    let mut url = url::Url::parse(base_url.trim())
        .map_err(|e| format!("the NocoBase URL is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the NocoBase URL must start with http:// or https://, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the NocoBase URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
                "the NocoBase URL must not contain a user name or password; the API key goes in its Secret"
                    .into(),
            );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the NocoBase URL must not have a query (?...) or fragment (#...)".into());
    }
    let shown = url.as_str().trim_end_matches('/').to_owned();
    {
        let mut segs = url
            .path_segments_mut()
            .map_err(|()| "the NocoBase URL cannot be a base".to_owned())?;
        segs.pop_if_empty();
    }
    if url.path_segments().and_then(|mut s| s.next_back()) != Some("api") {
        url.path_segments_mut()
            .map_err(|()| "the NocoBase URL cannot be a base".to_owned())?
            .push("api");
    }
    // A trailing empty segment makes the path end with `/`.
    url.path_segments_mut()
        .map_err(|()| "the NocoBase URL cannot be a base".to_owned())?
        .push("");

    Ok((url, shown))
}

/// A fixed, upper-case code such as `INVALID_TOKEN`: safe to quote.
fn is_code(c: &str) -> bool {
    (1..=40).contains(&c.len())
        && c.chars()
            .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_')
}

/// `updatedAt` as NocoBase serialises it (an ISO string; a number on some dialects).
fn timestamp(v: serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> Result<NocoBaseClient, String> {
        NocoBaseClient::new(
            url,
            SecretString::from("key"),
            None,
            NocoBaseOptions::default(),
        )
    }

    #[test]
    fn api_base_is_derived_from_the_root_url() {
        for (given, api) in [
            ("http://nocobase:13000", "http://nocobase:13000/api/"),
            ("http://nocobase:13000/", "http://nocobase:13000/api/"),
            ("http://nocobase:13000/api", "http://nocobase:13000/api/"),
            ("http://nocobase:13000/api/", "http://nocobase:13000/api/"),
            ("https://example.com/nb", "https://example.com/nb/api/"),
        ] {
            assert_eq!(client(given).unwrap().api.as_str(), api, "{given}");
        }
    }

    #[test]
    fn bad_urls_and_keys_are_refused() {
        for bad in [
            "nocobase:13000",
            "ftp://nocobase",
            "http://user:pw@nocobase",
            "http://nocobase/?x=1",
            "not a url",
        ] {
            assert!(client(bad).is_err(), "{bad}");
        }
        let empty = NocoBaseClient::new(
            "http://nocobase",
            SecretString::from(" \n"),
            None,
            NocoBaseOptions::default(),
        );
        assert!(empty.unwrap_err().contains("empty"));
        let inner = NocoBaseClient::new(
            "http://nocobase",
            SecretString::from("ab cd"),
            None,
            NocoBaseOptions::default(),
        );
        assert!(!inner.unwrap_err().contains("ab cd"));
    }

    #[test]
    fn kinds_follow_nocobase() {
        assert_eq!(VarKind::from_nocobase(Some("secret")), VarKind::Secret);
        assert_eq!(VarKind::from_nocobase(Some("default")), VarKind::Default);
        assert_eq!(VarKind::from_nocobase(None), VarKind::Default);
        assert!(is_code("INVALID_TOKEN"));
        assert!(!is_code("Your session has expired"));
    }
}
