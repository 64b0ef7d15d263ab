//! The outbound HTTP client shared by the Microsoft and NocoBase clients: rustls, the
//! system roots plus an optional PEM bundle, `HTTPS_PROXY`/`NO_PROXY` honoured by reqwest,
//! no redirects (a redirect from a login or API endpoint is an answer, not a detour).

use std::time::Duration;

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
