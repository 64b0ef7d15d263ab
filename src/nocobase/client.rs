//! NocoBase I/O: the REST API of "Variables and secrets" (`environmentVariables:list`,
//! `:create`, `:update`, `:destroy`) and `app:refresh`, with timeouts and the operator's TLS
//! settings. The only file that talks to NocoBase; its answers are read by the pure
//! [`super::classify`].
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

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::classify;
pub(super) use super::classify::Op;
pub use super::classify::SyncError;
use super::endpoint::{Endpoint, api_key_header, api_url, app_header};
use super::{VarKind, reason};
use crate::http::RequestObserver;

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
        let api_key = api_key_header(&api_key)?;
        let app = app_header(app)?;
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
        let returned = self.records(Op::Create, &answer)?;
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
        let returned = self.records(Op::Update, &answer)?;
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

    /// The records a create or update answers with (one object or an array).
    fn records(&self, op: Op, answer: &[u8]) -> Result<Vec<RecordHead>, SyncError> {
        match serde_json::from_slice::<Envelope<OneOrMany>>(answer) {
            Ok(Envelope { data }) => Ok(match data {
                OneOrMany::Many(v) => v,
                OneOrMany::One(r) => vec![r],
            }),
            Err(_) => Err(self.unreadable(op, 200)),
        }
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
                    // the reconcile's I/O budget ends the wait too
                    let left = crate::http::io_time_left().map_or(left, |b| b.min(left));
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
        let limit = crate::http::request_limit(self.request_timeout);
        let req = crate::http::within_deadline(req, self.request_timeout);
        let t0 = Instant::now();
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.observe(op, 0, t0.elapsed());
                return Err(self.transport_failure(op, &e, limit));
            }
        };
        let status = resp.status().as_u16();
        let body = crate::http::read_capped(resp, crate::http::MAX_BODY_BYTES).await;
        self.observe(op, status, t0.elapsed());
        let body = match body {
            Ok(b) => b,
            Err(crate::http::BodyError::Transport(e)) => {
                return Err(self.transport_failure(op, &e, limit));
            }
            Err(crate::http::BodyError::TooLarge) => {
                return Err(classify::too_large(&self.endpoint(), op));
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
        Err(classify::classify(
            &self.endpoint(),
            op,
            status,
            &body,
            names,
        ))
    }

    /// A 2xx answer whose body is not what NocoBase sends.
    pub(super) fn unreadable(&self, op: Op, status: u16) -> SyncError {
        classify::unreadable(&self.endpoint(), op, status)
    }

    /// `limit`: the request's timeout and whether the reconcile's I/O budget set it
    /// ([`crate::http::request_limit`]).
    fn transport_failure(&self, op: Op, e: &reqwest::Error, limit: (Duration, bool)) -> SyncError {
        let failure = crate::http::transport_failure(e);
        classify::transport(&self.endpoint(), op, failure, limit)
    }

    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            base: &self.shown,
            app: self.app.as_deref(),
        }
    }
}

/// `updatedAt` as NocoBase serialises it (an ISO string; a number on some dialects).
fn timestamp(v: serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
