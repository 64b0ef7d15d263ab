//! TLS for real: the Microsoft client against a local HTTPS server whose certificate is
//! issued by a private CA, once trusted through the CA bundle option and once not.
//!
//! Plain-http tests cannot catch TLS set-up failures; rustls panics at the first handshake
//! when the dependency tree enables two crypto providers and none is installed. This test
//! installs nothing, as the binary does not either.

mod common;

use std::sync::Arc;

use common::*;
use nocobase_mail_operator::api::Cloud;
use nocobase_mail_operator::input::{RawCredentials, check};
use nocobase_mail_operator::microsoft::{ClientOptions, MicrosoftClient, Outcome, reason};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Starts an HTTPS server on localhost that answers every request with Microsoft's token
/// success body; returns its URL and the PEM of the CA that issued its certificate.
async fn https_token_server() -> (String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();

    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = fixture("token_success.json");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 16 * 1024];
                let _ = tls.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://localhost:{port}"), ca.pem())
}

async fn validate_against(
    host: &str,
    opts: ClientOptions,
) -> nocobase_mail_operator::microsoft::Verdict {
    let creds = check(&RawCredentials {
        tenant_id: TENANT,
        client_id: CLIENT,
        client_secret: SECRET.as_bytes(),
        cloud: Cloud::AzurePublic,
        authority_host: Some(host),
        graph_host: Some(host),
    })
    .unwrap();
    MicrosoftClient::new(opts)
        .unwrap()
        .validate(&creds, false)
        .await
}

#[tokio::test]
async fn trusted_private_ca_gives_a_verdict() {
    let (host, ca_pem) = https_token_server().await;
    let opts = ClientOptions {
        ca_bundle_pem: Some(ca_pem.into_bytes()),
        ..fast_options()
    };
    let v = validate_against(&host, opts).await;
    assert_eq!(v.outcome, Outcome::Valid, "{v:?}");
}

#[tokio::test]
async fn untrusted_certificate_is_a_tls_error_not_a_panic() {
    let (host, _ca_pem) = https_token_server().await;
    let v = validate_against(&host, fast_options()).await;
    assert_eq!(
        (v.outcome, v.reason),
        (Outcome::Unavailable, Some(reason::TLS_ERROR)),
        "{v:?}"
    );
    assert!(v.hint.unwrap().contains("CA"));
}

#[test]
fn a_bad_ca_bundle_is_refused_clearly() {
    let err = MicrosoftClient::new(ClientOptions {
        ca_bundle_pem: Some(b"not pem".to_vec()),
        ..Default::default()
    })
    .err()
    .unwrap();
    assert!(err.contains("CA bundle"), "{err}");
}
