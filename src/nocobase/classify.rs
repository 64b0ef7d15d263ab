//! NocoBase's answers read (pure), beside the sync plan as Microsoft's are read in
//! `microsoft/classify.rs`: an HTTP status and body, or a failed connection, become a
//! [`SyncError`] with one of [`super::reason`] and a message an administrator can act on.
//! Only fixed codes (`INVALID_TOKEN`, `APP_NOT_FOUND`, ...) are quoted; NocoBase's own
//! messages are matched, never repeated, and no body, value or API key reaches a message.

use std::time::Duration;

use serde::Deserialize;

use super::endpoint::Endpoint;
use super::reason;
use crate::http::TransportFailure;

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

/// The NocoBase actions the operator calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
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
    pub fn action(self) -> &'static str {
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

    pub fn method(self) -> reqwest::Method {
        match self {
            Op::List | Op::Swagger | Op::RecordList => reqwest::Method::GET,
            _ => reqwest::Method::POST,
        }
    }

    fn on_variables(self) -> bool {
        matches!(self, Op::List | Op::Create | Op::Update | Op::Destroy)
    }
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

/// What an error body says: NocoBase's error handler (`{"errors":[{"message","code"}]}`)
/// or its gateway (`{"error":{"code","maintaining"}}`), with only safe-to-quote codes.
struct ErrorAnswer {
    errors: Vec<ErrorItem>,
    gateway_code: Option<String>,
    maintaining: bool,
    /// The first safe code, for messages.
    code: Option<String>,
}

fn read_error(body: &[u8]) -> ErrorAnswer {
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
    ErrorAnswer {
        errors,
        gateway_code,
        maintaining,
        code,
    }
}

/// Reads a non-2xx answer. Only fixed codes (`INVALID_TOKEN`, `APP_NOT_FOUND`, ...) are
/// quoted; NocoBase's messages are matched, never repeated. `names` are the variables (or
/// the collection) the request concerned.
pub fn classify(at: &Endpoint<'_>, op: Op, status: u16, body: &[u8], names: &[&str]) -> SyncError {
    let answer = read_error(body);
    let gw = answer.gateway_code.as_deref();
    if let Some((r, m)) = super::record_errors::classify(at.base, op.action(), status, gw, names) {
        return SyncError::new(r, m);
    }
    let code_note = answer
        .code
        .as_deref()
        .map_or(String::new(), |c| format!(" ({c})"));
    let action = op.action();
    let base = at.base;
    let in_app = at
        .app
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
        404 if gw == Some("APP_NOT_FOUND") => SyncError::new(
            reason::APP_NOT_FOUND,
            format!(
                "NocoBase at {base} has no application named {:?} (spec.nocobase.app, sent as X-App). Correct the name, or leave it empty for the main application",
                at.app.unwrap_or("main")
            ),
        ),
        404 if op.on_variables() => SyncError::new(
            reason::PLUGIN_MISSING,
            format!(
                "NocoBase at {base} has no {action} action{in_app}: the built-in \"Variables and secrets\" plugin (@nocobase/plugin-environment-variables) is not enabled, or spec.nocobase.url is not NocoBase's root URL. Enable the plugin in Settings > Plugin manager"
            ),
        ),
        400 if op == Op::Create || op == Op::Update => {
            refused_write(base, action, &answer.errors, names, &code_note)
        }
        429 | 500..=599 => {
            let restarting =
                status == 503 && answer.maintaining && gw.is_none_or(|c| COMING_BACK.contains(&c));
            unavailable(base, action, status, &code_note, restarting)
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
fn refused_write(
    base: &str,
    action: &str,
    errors: &[ErrorItem],
    names: &[&str],
    code_note: &str,
) -> SyncError {
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
    base: &str,
    action: &str,
    status: u16,
    code_note: &str,
    restarting: bool,
) -> SyncError {
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
pub fn unreadable(at: &Endpoint<'_>, op: Op, status: u16) -> SyncError {
    SyncError::new(
        reason::UNEXPECTED_RESPONSE,
        format!(
            "NocoBase at {} answered {} with HTTP {status} but not with NocoBase's JSON envelope: spec.nocobase.url probably points at something else than NocoBase's root URL (a web page, a proxy's login page)",
            at.base,
            op.action()
        ),
    )
}

/// An answer larger than any NocoBase answer: not read.
pub fn too_large(at: &Endpoint<'_>, op: Op) -> SyncError {
    SyncError::new(
        reason::UNEXPECTED_RESPONSE,
        format!(
            "NocoBase at {} answered {} with a body larger than 1 MiB, which no NocoBase answer is; it was not read. Check spec.nocobase.url",
            at.base,
            op.action()
        ),
    )
}

/// A request that got no HTTP answer.
pub fn transport(
    at: &Endpoint<'_>,
    op: Op,
    failure: TransportFailure,
    (timeout, by_budget): (Duration, bool),
) -> SyncError {
    let base = at.base;
    let action = op.action();
    let message = match failure {
        // cut by the reconcile's budget: the time left, and the flag that sets it
        TransportFailure::Timeout if by_budget => format!(
            "NocoBase at {base} did not answer {action} within {:.1} s, what was left of this reconcile's I/O budget (--reconcile-io-deadline). Check that NocoBase is not overloaded; the operator will try again",
            timeout.as_secs_f32()
        ),
        TransportFailure::Timeout => format!(
            "NocoBase at {base} did not answer {action} within {} s. Check that NocoBase is running and reachable from the operator (Service, NetworkPolicy, HTTPS_PROXY/NO_PROXY); the operator will try again",
            timeout.as_secs_f32()
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

/// A fixed, upper-case code such as `INVALID_TOKEN`: safe to quote.
fn is_code(c: &str) -> bool {
    (1..=40).contains(&c.len())
        && c.chars()
            .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Endpoint<'static> = Endpoint {
        base: "http://nb",
        app: None,
    };

    #[test]
    fn codes_are_quoted_only_when_fixed() {
        assert!(is_code("INVALID_TOKEN"));
        assert!(!is_code("Your session has expired"));
    }

    #[test]
    fn a_maintaining_503_is_a_restart_unless_somebody_must_act() {
        let body = |code: &str| {
            format!(r#"{{"error":{{"code":"{code}","maintaining":true}}}}"#).into_bytes()
        };
        let restarting = classify(&AT, Op::List, 503, &body("APP_COMMANDING"), &[]);
        assert_eq!(restarting.reason, reason::NOCOBASE_RESTARTING);
        assert!(restarting.transient);
        let stopped = classify(&AT, Op::List, 503, &body("APP_STOPPED"), &[]);
        assert_eq!(stopped.reason, reason::NOCOBASE_UNREACHABLE);
        let plain = classify(&AT, Op::List, 503, b"oops", &[]);
        assert_eq!(plain.reason, reason::NOCOBASE_UNREACHABLE);
    }
}
