//! The only I/O of `register` towards Microsoft Graph: sends the [`Request`]s the pure
//! [`super::plan`] decided, with the administrator's delegated token. With `--dry-run`
//! nothing is sent: each request is printed (method, path, body; no body carries a secret,
//! and `addPassword`'s answer, which does, is never printed) and answered as "not found".

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::plan::Request;
use crate::http::{MAX_BODY_BYTES, read_capped};

/// Attempts for 429 and 5xx answers, first included.
const ATTEMPTS: u32 = 4;

/// A Graph answer that is not a success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphFailure {
    pub status: u16,
    /// Graph's `error.code` (`Authorization_RequestDenied`, ...), or empty.
    pub code: String,
    /// Graph's own sentence, bounded; it never holds a secret.
    pub message: String,
}

impl GraphFailure {
    /// The signed-in account lacks the role or consent for this call.
    pub fn denied(&self) -> bool {
        self.status == 403 || self.code == "Authorization_RequestDenied"
    }

    pub fn transient(&self) -> bool {
        self.status == 0 || self.status == 429 || self.status >= 500
    }

    pub fn describe(&self) -> String {
        match self.status {
            0 => self.message.clone(),
            s => format!(
                "Microsoft Graph answered HTTP {s} {}: {}",
                self.code, self.message
            ),
        }
    }
}

fn failure(status: u16, body: &[u8]) -> GraphFailure {
    let (code, message) = crate::microsoft::passwords::error_parts(body);
    GraphFailure {
        status,
        code,
        message: if message.is_empty() {
            "no Graph error body".into()
        } else {
            message
        },
    }
}

/// A Graph session as the signed-in administrator.
pub struct Directory {
    http: reqwest::Client,
    pub graph_host: String,
    token: SecretString,
    pub dry_run: bool,
    /// Writes sent (POST, PATCH), for the report.
    pub writes: u32,
}

impl Directory {
    pub fn new(
        http: reqwest::Client,
        graph_host: String,
        token: SecretString,
        dry_run: bool,
    ) -> Self {
        Self {
            http,
            graph_host,
            token,
            dry_run,
            writes: 0,
        }
    }

    /// A read; `None` when Graph answers 404 (or in a dry run).
    pub async fn read(&self, req: &Request) -> Result<Option<Value>, GraphFailure> {
        if self.dry_run {
            self.print(req);
            return Ok(None);
        }
        match self.exchange(req).await {
            Ok(v) => Ok(Some(v)),
            Err(f) if f.status == 404 => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// A write; `None` in a dry run. Its answer may hold a secret (`addPassword`): the
    /// caller takes what it needs and drops the rest unprinted.
    pub async fn write(&mut self, req: &Request) -> Result<Option<Value>, GraphFailure> {
        if self.dry_run {
            self.print(req);
            return Ok(None);
        }
        self.writes += 1;
        tracing::info!(method = req.method, path = %req.path, "Graph write: {}", req.what);
        self.exchange(req).await.map(Some)
    }

    fn print(&self, req: &Request) {
        println!(
            "{} {}{}   # {}",
            req.method, self.graph_host, req.path, req.what
        );
        if let Some(b) = &req.body {
            println!("  {b}");
        }
    }

    async fn exchange(&self, req: &Request) -> Result<Value, GraphFailure> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.once(req).await;
            match &result {
                Err(f) if f.transient() && attempt < ATTEMPTS => {
                    let wait = Duration::from_millis(500 << attempt);
                    tracing::debug!(status = f.status, attempt, "Graph retry");
                    tokio::time::sleep(wait).await;
                }
                _ => return result,
            }
        }
    }

    async fn once(&self, req: &Request) -> Result<Value, GraphFailure> {
        let url = format!("{}{}", self.graph_host, req.path);
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).expect("a known method");
        let mut b = self
            .http
            .request(method, &url)
            .bearer_auth(self.token.expose_secret());
        if let Some(body) = &req.body {
            b = b.json(body);
        }
        let unreachable = |e: reqwest::Error| GraphFailure {
            status: 0,
            code: String::new(),
            message: format!(
                "Microsoft Graph ({}) could not be reached ({:?})",
                self.graph_host,
                crate::http::transport_failure(&e)
            ),
        };
        let resp = b.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body = read_capped(resp, MAX_BODY_BYTES)
            .await
            .map_err(|_| GraphFailure {
                status: 0,
                code: String::new(),
                message: "Microsoft Graph's answer could not be read".into(),
            })?;
        tracing::debug!(method = req.method, path = %req.path, status, "Graph answered");
        if (200..300).contains(&status) {
            return Ok(serde_json::from_slice(&body).unwrap_or(Value::Null));
        }
        Err(failure(status, &body))
    }
}
