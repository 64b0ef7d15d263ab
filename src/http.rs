//! The outbound HTTP client shared by the Microsoft and NocoBase clients: rustls, the
//! system roots plus an optional PEM bundle, `HTTPS_PROXY`/`NO_PROXY` honoured by reqwest,
//! no redirects (a redirect from a login or API endpoint is an answer, not a detour).

use std::sync::Arc;
use std::time::Duration;

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
