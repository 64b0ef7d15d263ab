//! Microsoft I/O: the client-credentials token request and the Graph read of the app
//! registration. Classification is delegated to the pure [`super::classify`] and
//! [`super::graph`] modules; this file only moves bytes, times out and retries.

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde::Deserialize;

use super::classify::{classify_failure, parse_retry_after};
use super::graph::{Application, findings};
use super::verdict::{ExpiryInfo, GraphFindings, Outcome, Verdict, reason};
use crate::http::TransportFailure;
use crate::http::{BodyError, MAX_BODY_BYTES, read_capped};
use crate::input::{Credentials, is_guid, secret_hint};

/// Called after every HTTP exchange with Microsoft: which endpoint, the HTTP status (or 0
/// when none came back), and how long it took. Feeds the latency histogram.
pub use crate::http::RequestObserver;

/// Timeouts and retry policy. Defaults answer within a minute even when Microsoft hangs.
#[derive(Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Upper bound for one whole validation, retries included.
    pub deadline: Duration,
    /// Attempts for transient failures (throttling, 5xx, timeouts, network), first included.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Extra PEM CA certificates trusted besides the system roots.
    pub ca_bundle_pem: Option<Vec<u8>>,
    pub observer: Option<RequestObserver>,
    /// A client built once and shared (the controller's); `None`: built from the above.
    pub http: Option<reqwest::Client>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            deadline: Duration::from_secs(45),
            max_attempts: 3,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(8),
            ca_bundle_pem: None,
            observer: None,
            http: None,
        }
    }
}

/// Talks to Microsoft's token endpoint and Graph.
#[derive(Clone)]
pub struct MicrosoftClient {
    http: reqwest::Client,
    opts: ClientOptions,
}

#[derive(Deserialize)]
struct TokenSuccess {
    access_token: Option<String>,
}

impl MicrosoftClient {
    /// Builds the HTTP client: rustls, system roots plus the optional CA bundle, and the
    /// `HTTPS_PROXY`/`NO_PROXY` environment honoured by reqwest.
    pub fn new(opts: ClientOptions) -> Result<Self, String> {
        let http = match &opts.http {
            Some(shared) => shared.clone(),
            None => crate::http::client(
                opts.connect_timeout,
                opts.request_timeout,
                opts.ca_bundle_pem.as_deref(),
            )?,
        };
        Ok(Self { http, opts })
    }

    /// Validates the credentials; with `discover` also reads expiry and permissions from
    /// Graph when the token allows it. Never fails: every problem is a [`Verdict`].
    pub async fn validate(&self, creds: &Credentials, discover: bool) -> Verdict {
        let started = Instant::now();
        let mut attempt = 0;
        let (mut verdict, token) = loop {
            attempt += 1;
            let (verdict, token) = self.token_once(creds).await;
            let transient = verdict.outcome == Outcome::Unavailable;
            if !transient || attempt >= self.opts.max_attempts {
                break (verdict, token);
            }
            let wait = self.backoff(attempt, verdict.retry_after);
            let budget_spent = crate::http::io_time_left().is_some_and(|left| left <= wait);
            if budget_spent || started.elapsed().saturating_add(wait) >= self.opts.deadline {
                break (verdict, token);
            }
            tracing::debug!(
                attempt,
                reason = verdict.reason,
                wait_ms = wait.as_millis() as u64,
                "retrying token request"
            );
            tokio::time::sleep(wait).await;
        };
        verdict.notes.extend(creds.notes.iter().cloned());
        if let Some(token) = token {
            verdict.graph = if discover {
                self.read_application(creds, &token).await
            } else {
                GraphFindings {
                    expiry: ExpiryInfo {
                        note: Some("Graph discovery is turned off".into()),
                        ..Default::default()
                    },
                    missing_permissions: None,
                    registration: None,
                }
            };
        }
        verdict
    }

    /// Exponential backoff with full jitter, never shorter than what Microsoft asked for.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .opts
            .backoff_base
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(self.opts.backoff_cap);
        let jittered = exp.mul_f64(rand::random_range(0.5..=1.0));
        retry_after.map_or(jittered, |r| r.max(jittered))
    }

    /// An app-only Graph token for `creds` (one attempt; rotation retries on its own
    /// schedule), or the verdict explaining why there is none.
    pub async fn access_token(
        &self,
        creds: &Credentials,
    ) -> Result<secrecy::SecretString, Verdict> {
        match self.token_once(creds).await {
            (_, Some(token)) => Ok(secrecy::SecretString::from(token)),
            (verdict, None) => Err(verdict),
        }
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `req` cut to the reconcile's I/O budget ([`crate::http::within_deadline`]).
    pub(crate) fn bounded(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        crate::http::within_deadline(req, self.opts.request_timeout)
    }

    pub(crate) fn observe(&self, endpoint: &'static str, status: u16, took: Duration) {
        if let Some(o) = &self.opts.observer {
            o(endpoint, status, took);
        }
    }

    async fn token_once(&self, creds: &Credentials) -> (Verdict, Option<String>) {
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            creds.authority_host, creds.tenant_id
        );
        let scope = format!("{}/.default", creds.graph_host);
        let secret = creds.client_secret.expose_secret();
        let form = [
            ("client_id", creds.client_id.as_str()),
            ("client_secret", secret),
            ("grant_type", "client_credentials"),
            ("scope", scope.as_str()),
        ];
        let t0 = Instant::now();
        let req = self.bounded(self.http.post(&url).form(&form));
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.observe("token", 0, t0.elapsed());
                return (transport_failure(&e, &creds.authority_host), None);
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        let body = read_capped(resp, MAX_BODY_BYTES).await;
        self.observe("token", status, t0.elapsed());
        let body = match body {
            Ok(b) => b,
            Err(BodyError::TooLarge) => return (too_large(&creds.authority_host), None),
            Err(BodyError::Transport(e)) => {
                return (transport_failure(&e, &creds.authority_host), None);
            }
        };
        if status == 200 {
            return match serde_json::from_slice::<TokenSuccess>(&body).ok().and_then(|t| t.access_token) {
                Some(token) if !token.is_empty() => (
                    Verdict::new(Outcome::Valid, None, "Microsoft accepted the client ID and client secret for this tenant."),
                    Some(token),
                ),
                _ => (
                    Verdict::unavailable(reason::UNEXPECTED_RESPONSE, "Microsoft answered HTTP 200 without an access token (truncated or malformed body).")
                        .with_hint("Check that the authority host is Microsoft's login endpoint; the operator will try again."),
                    None,
                ),
            };
        }
        let v = classify_failure(status, retry_after, &body, is_guid(secret));
        tracing::debug!(
            status,
            aadsts = v.aadsts_code,
            reason = v.reason,
            trace_id = v.trace_id.as_deref(),
            "token request refused"
        );
        (v, None)
    }

    async fn read_application(&self, creds: &Credentials, token: &str) -> GraphFindings {
        let url = format!(
            "{}/v1.0/applications(appId='{}')?$select=appId,displayName,passwordCredentials,requiredResourceAccess,signInAudience,web",
            creds.graph_host, creds.client_id
        );
        let unknown = |note: String| GraphFindings {
            expiry: ExpiryInfo {
                note: Some(note),
                ..Default::default()
            },
            missing_permissions: None,
            registration: None,
        };
        let t0 = Instant::now();
        let req = self.bounded(self.http.get(&url).bearer_auth(token));
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.observe("graph", 0, t0.elapsed());
                return unknown(format!(
                    "expiry unknown: Microsoft Graph could not be reached ({})",
                    transport_failure(&e, &creds.graph_host).message
                ));
            }
        };
        let status = resp.status().as_u16();
        let body = read_capped(resp, MAX_BODY_BYTES).await;
        self.observe("graph", status, t0.elapsed());
        let body = match body {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return unknown(format!(
                    "expiry unknown: {} answered with a body larger than 1 MiB, which no Graph answer is; it was not read",
                    creds.graph_host
                ));
            }
            Err(BodyError::Transport(_)) => Vec::new(),
        };
        match status {
            200 => match serde_json::from_slice::<Application>(&body) {
                Ok(app) => findings(&app, &secret_hint(&creds.client_secret)),
                Err(_) => unknown("expiry unknown: Microsoft Graph returned an application object that could not be read".into()),
            },
            401 | 403 => unknown(
                "expiry unknown: the application may not read its own registration in Microsoft Graph (Authorization_RequestDenied). Grant it the Application.Read.All application permission with admin consent, or state secretExpiry.expiresAt".into(),
            ),
            404 => unknown("expiry unknown: Microsoft Graph does not find this application's registration (is it registered in another tenant?); state secretExpiry.expiresAt".into()),
            s => unknown(format!("expiry unknown: Microsoft Graph answered HTTP {s}; it will be asked again at the next validation")),
        }
    }
}

/// An answer larger than any Microsoft sends: refused unread.
fn too_large(host: &str) -> Verdict {
    Verdict::unavailable(
        reason::UNEXPECTED_RESPONSE,
        format!("{host} answered with a body larger than 1 MiB, which no Microsoft answer is; it was not read."),
    )
    .with_hint("Check that the authority host is Microsoft's login endpoint (or your proxy passes it through unchanged); the operator will try again.")
}

/// A request that got no HTTP answer: timeout, TLS failure, or network error.
fn transport_failure(e: &reqwest::Error, host: &str) -> Verdict {
    let kind = match crate::http::transport_failure(e) {
        TransportFailure::Timeout => {
            return Verdict::unavailable(reason::TIMEOUT, format!("Microsoft did not answer in time ({host})."))
                .with_hint("Check egress from the cluster to the login host (firewall, proxy); the operator will try again.");
        }
        TransportFailure::Tls => {
            return Verdict::unavailable(
                reason::TLS_ERROR,
                format!("The TLS connection to {host} failed: its certificate is not trusted or the handshake failed."),
            )
            .with_hint("If a TLS-inspecting proxy sits in between, give its CA certificate with --ca-bundle (check) or the chart's caBundle value.");
        }
        TransportFailure::Connect => "could not connect to",
        TransportFailure::Lost => "lost the connection to",
    };
    Verdict::unavailable(reason::NETWORK_ERROR, format!("The operator {kind} {host}."))
        .with_hint("Check DNS, egress rules and HTTPS_PROXY/NO_PROXY for the login host; the operator will try again.")
}
