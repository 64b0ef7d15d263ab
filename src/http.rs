//! The outbound HTTP client shared by the Microsoft and NocoBase clients: rustls, the
//! system roots plus an optional PEM bundle, `HTTPS_PROXY`/`NO_PROXY` honoured by reqwest,
//! no redirects (a redirect from a login or API endpoint is an answer, not a detour).

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Called after every outbound HTTP exchange: which endpoint or action, the HTTP status (or
/// 0 when none came back), and how long it took. Feeds the latency histograms.
pub type RequestObserver = Arc<dyn Fn(&'static str, u16, Duration) + Send + Sync>;

/// Connect timeout of every outbound request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one outbound request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The client with the default timeouts: built once by the controller and shared by the
/// Microsoft and NocoBase clients (one connection pool, one TLS configuration).
pub fn default_client(ca_bundle_pem: Option<&[u8]>) -> Result<reqwest::Client, String> {
    client(CONNECT_TIMEOUT, REQUEST_TIMEOUT, ca_bundle_pem)
}

tokio::task_local! {
    /// When the external I/O of the reconcile running in this task must be done by.
    static IO_DEADLINE: Instant;
}

/// Runs `f` with a budget for all of its external I/O together (Microsoft, Graph,
/// NocoBase): every request sent inside is cut at the budget's end, and waits between
/// retries stop there. A reconcile that talks to a slow endpoint ends within the budget
/// and records what it learned (a timeout) instead of holding its slot for minutes.
pub async fn with_io_deadline<F: std::future::Future>(budget: Duration, f: F) -> F::Output {
    IO_DEADLINE.scope(Instant::now() + budget, f).await
}

/// Time left for external I/O in this task; `None` outside [`with_io_deadline`].
pub fn io_time_left() -> Option<Duration> {
    IO_DEADLINE
        .try_with(|d| d.saturating_duration_since(Instant::now()))
        .ok()
}

/// `req` with its timeout cut to what is left of the task's I/O budget (never longer
/// than `request_timeout`, the client's own timeout for one request).
pub fn within_deadline(
    req: reqwest::RequestBuilder,
    request_timeout: Duration,
) -> reqwest::RequestBuilder {
    match io_time_left() {
        Some(_) => req.timeout(request_limit(request_timeout).0),
        None => req,
    }
}

/// The timeout [`within_deadline`] gives a request sent now, and whether what is left of
/// the reconcile's I/O budget (rather than `request_timeout`) set it: a timeout message
/// must name the limit that cut the request.
pub fn request_limit(request_timeout: Duration) -> (Duration, bool) {
    match io_time_left() {
        // a spent budget still sends nothing useful: the shortest timeout fails at once
        Some(left) if left < request_timeout => (left.max(Duration::from_millis(1)), true),
        _ => (request_timeout, false),
    }
}

/// Largest response body read from Microsoft or NocoBase. Every real answer is a few KiB
/// (an app registration with many credentials stays far below); a larger body is refused so
/// that a chosen URL cannot exhaust the operator's memory (the chart's limit is 128 MiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Longest text quoted from an answer (Microsoft's `error_description`, IDs) into status,
/// Events or logs.
pub const MAX_QUOTED_CHARS: usize = 300;

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than the cap: declared by `Content-Length`, or found while streaming.
    TooLarge,
    /// The connection failed while reading.
    Transport(reqwest::Error),
}

/// Reads a response body of at most `limit` bytes: a larger `Content-Length` is refused
/// before reading anything, and a body without one is read chunk by chunk and abandoned as
/// soon as it passes the limit.
pub async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `text` cut to `max` characters (at a character boundary), marked when cut.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

pub fn client(
    connect_timeout: Duration,
    request_timeout: Duration,
    ca_bundle_pem: Option<&[u8]>,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .user_agent(concat!(
            "nocobase-mail-operator/",
            env!("CARGO_PKG_VERSION")
        ))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = ca_bundle_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("CA bundle is not valid PEM: {e}"))?;
        if certs.is_empty() {
            return Err("CA bundle holds no certificate".into());
        }
        b = b.tls_certs_merge(certs);
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Whether a request failed in the TLS handshake (untrusted certificate, ...), as opposed
/// to DNS, connection or timeout problems.
pub fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // io::Error::source() skips the error it wraps, so step into it explicitly.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

/// Why a request got no HTTP answer, for both clients to word in their own terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportFailure {
    Timeout,
    /// The TLS handshake failed (untrusted certificate, ...).
    Tls,
    /// DNS, connection refused, firewall.
    Connect,
    /// The connection was lost during the exchange.
    Lost,
}

/// The one mapping of a reqwest error without an HTTP answer.
pub fn transport_failure(e: &reqwest::Error) -> TransportFailure {
    if e.is_timeout() {
        TransportFailure::Timeout
    } else if is_tls_error(e) {
        TransportFailure::Tls
    } else if e.is_connect() {
        TransportFailure::Connect
    } else {
        TransportFailure::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn clip_cuts_at_character_boundaries() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
        assert_eq!(clip("ééééé", 2), "éé…");
        assert_eq!(clip("😀😀😀", 1), "😀…");
        assert_eq!(clip("", 0), "");
    }
}
