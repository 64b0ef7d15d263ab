//! Pure checks of what an administrator typed, before anything is sent to Microsoft.
//!
//! The same rules exist as CEL in the CRD (see `crate::api`); a test runs both on one table
//! of cases so they cannot drift apart. `check` runs them too, since it has no API server.

use secrecy::{ExposeSecret, SecretString};

use crate::api::Cloud;

/// Something wrong on its face: nothing is sent to Microsoft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProblem {
    /// CamelCase reason, e.g. `MalformedTenantId`.
    pub reason: &'static str,
    /// What is wrong and what to do, for an administrator.
    pub message: String,
}

impl InputProblem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Credentials that passed the input checks and may be sent to Microsoft.
#[derive(Clone)]
pub struct Credentials {
    pub tenant_id: String,
    pub client_id: String,
    /// The client secret, surrounding whitespace removed. Never printed.
    pub client_secret: SecretString,
    pub authority_host: String,
    pub graph_host: String,
    /// Notes about what was tidied (e.g. a trailing newline removed). Never contain the secret.
    pub notes: Vec<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("authority_host", &self.authority_host)
            .field("graph_host", &self.graph_host)
            .finish()
    }
}

/// Raw input as it came from the resource, the command line or a Secret.
pub struct RawCredentials<'a> {
    pub tenant_id: &'a str,
    pub client_id: &'a str,
    /// Bytes of the secret as stored (a Kubernetes Secret value may hold anything).
    pub client_secret: &'a [u8],
    pub cloud: Cloud,
    pub authority_host: Option<&'a str>,
    pub graph_host: Option<&'a str>,
}

impl<'a> RawCredentials<'a> {
    /// The resource's IDs and hosts with the secret's bytes as stored.
    pub fn from_spec(
        spec: &'a crate::api::MicrosoftMailIntegrationSpec,
        client_secret: &'a [u8],
    ) -> Self {
        Self {
            tenant_id: &spec.tenant_id,
            client_id: &spec.client_id,
            client_secret,
            cloud: spec.cloud,
            authority_host: spec.authority_host.as_deref(),
            graph_host: spec.graph_host.as_deref(),
        }
    }
}

/// Checks the input and returns credentials ready to send, or the first problem found.
///
/// Surrounding whitespace and line breaks around the secret (the usual accident of
/// `kubectl create secret --from-file` or a copied line) are removed and reported in
/// `notes`: a Microsoft client secret Value never contains whitespace, so removing it
/// cannot change a real secret. Whitespace or control characters *inside* the value mean
/// it was damaged, and it is refused.
pub fn check(raw: &RawCredentials<'_>) -> Result<Credentials, InputProblem> {
    let tenant_id = check_tenant(raw.tenant_id)?;
    let client_id = check_client_id(raw.client_id)?;
    let authority_host = check_host(
        raw.authority_host,
        raw.cloud.authority_host(),
        "authority host",
    )?;
    let graph_host = check_host(raw.graph_host, raw.cloud.graph_host(), "Graph host")?;
    let (secret, notes) = check_secret(raw.client_secret)?;
    Ok(Credentials {
        tenant_id,
        client_id,
        client_secret: secret,
        authority_host,
        graph_host,
        notes,
    })
}

/// Longest integration name: it is the value of the managed Secret's
/// `nocobase-mail-operator.dev/integration` label (at most 63 characters), and
/// `<name>-microsoft-credentials` stays a valid Secret name. The CRD's CEL rule says the same.
pub const MAX_NAME_LEN: usize = 63;

/// A `deploymentSelector` without any label or expression.
pub fn selects_everything(target: &crate::api::Target) -> bool {
    target.deployment_selector.as_ref().is_some_and(|s| {
        s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    })
}

/// A GUID in its usual 8-4-4-4-12 hexadecimal form.
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A DNS name with at least two labels and an alphabetic top-level label.
pub fn is_domain(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    if labels.len() < 2 {
        return false;
    }
    let (tld, rest) = labels.split_last().expect("two labels at least");
    let tld_ok = (2..=63).contains(&tld.len()) && tld.bytes().all(|c| c.is_ascii_alphabetic());
    tld_ok
        && rest.iter().all(|l| {
            let b = l.as_bytes();
            (1..=63).contains(&b.len())
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// Environment variable name as Kubernetes and POSIX shells accept it.
pub fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

pub fn check_tenant(tenant: &str) -> Result<String, InputProblem> {
    let t = tenant.trim();
    if ["common", "organizations", "consumers"]
        .iter()
        .any(|m| t.eq_ignore_ascii_case(m))
    {
        return Err(InputProblem::new(
            "NotATenant",
            format!(
                "'{t}' is not a tenant: an application token needs the Directory (tenant) ID GUID or a verified domain of the tenant holding the app registration (Microsoft Entra admin center > Overview)."
            ),
        ));
    }
    if t.is_empty() || !(is_guid(t) || is_domain(t)) {
        return Err(InputProblem::new(
            "MalformedTenantId",
            format!(
                "tenant ID '{}' is neither a GUID nor a domain name: copy the Directory (tenant) ID from the app registration's Overview page.",
                t.escape_debug()
            ),
        ));
    }
    Ok(t.to_owned())
}

pub fn check_client_id(client_id: &str) -> Result<String, InputProblem> {
    let c = client_id.trim();
    if !is_guid(c) {
        return Err(InputProblem::new(
            "MalformedClientId",
            format!(
                "client ID '{}' is not a GUID: copy the Application (client) ID from the app registration's Overview page.",
                c.escape_debug()
            ),
        ));
    }
    Ok(c.to_owned())
}

/// An override must be https, or http to a loopback address (tests, local emulators).
pub fn check_host(
    given: Option<&str>,
    default: &str,
    what: &'static str,
) -> Result<String, InputProblem> {
    let Some(given) = given else {
        return Ok(default.to_owned());
    };
    let bad = |why: &str| {
        InputProblem::new(
            "InvalidHostOverride",
            format!("{what} override '{}' {why}", given.escape_debug()),
        )
    };
    let url = url::Url::parse(given).map_err(|_| bad("is not a URL"))?;
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(bad("must not carry a query, fragment or user name"));
    }
    let loopback = matches!(
        url.host(),
        Some(url::Host::Domain("localhost"))
            | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
            | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
    );
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(bad(
                "uses http: only https is allowed, except for localhost",
            ));
        }
        _ => return Err(bad("must be an https:// URL")),
    }
    Ok(given.trim_end_matches('/').to_owned())
}

fn check_secret(raw: &[u8]) -> Result<(SecretString, Vec<String>), InputProblem> {
    let Ok(text) = std::str::from_utf8(raw) else {
        return Err(InputProblem::new(
            "MalformedSecret",
            "the client secret is not text (not UTF-8): store the secret Value as shown in Certificates & secrets.",
        ));
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(InputProblem::new(
            "EmptySecret",
            "the client secret is empty: store the secret Value from Certificates & secrets in the Secret.",
        ));
    }
    if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InputProblem::new(
            "MalformedSecret",
            "the client secret contains spaces, line breaks or control characters inside it; a client secret Value never does. Copy the Value again from Certificates & secrets.",
        ));
    }
    let mut notes = Vec::new();
    if trimmed.len() != text.len() {
        let newline = text.ends_with('\n');
        notes.push(if newline {
            "the client secret ended with a line break (as `kubectl create secret --from-file` keeps it); it was removed before sending".to_owned()
        } else {
            "the client secret had surrounding whitespace; it was removed before sending".to_owned()
        });
    }
    Ok((SecretString::from(trimmed.to_owned()), notes))
}

/// The secret's first three characters: what Microsoft itself shows as the credential `hint`
/// in the portal and in Graph, and so the only part of it ever compared or shown.
pub fn secret_hint(secret: &SecretString) -> String {
    secret.expose_secret().chars().take(3).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "11111111-2222-4333-8444-555555555555";

    fn raw<'a>(tenant: &'a str, client: &'a str, secret: &'a [u8]) -> RawCredentials<'a> {
        RawCredentials {
            tenant_id: tenant,
            client_id: client,
            client_secret: secret,
            cloud: Cloud::AzurePublic,
            authority_host: None,
            graph_host: None,
        }
    }

    #[test]
    fn accepts_guid_and_domain_tenants() {
        assert!(check(&raw(TENANT, CLIENT, b"abc~def")).is_ok());
        assert!(check(&raw("contoso.onmicrosoft.com", CLIENT, b"abc~def")).is_ok());
    }

    #[test]
    fn refuses_multi_tenant_aliases() {
        for alias in ["common", "Organizations", "CONSUMERS"] {
            let err = check(&raw(alias, CLIENT, b"x")).unwrap_err();
            assert_eq!(err.reason, "NotATenant", "{alias}");
        }
    }

    #[test]
    fn refuses_malformed_ids() {
        assert_eq!(
            check(&raw("not a tenant", CLIENT, b"x"))
                .unwrap_err()
                .reason,
            "MalformedTenantId"
        );
        assert_eq!(
            check(&raw(TENANT, "1234", b"x")).unwrap_err().reason,
            "MalformedClientId"
        );
    }

    #[test]
    fn trailing_newline_is_removed_and_reported() {
        let c = check(&raw(TENANT, CLIENT, b"abc~def\n")).unwrap();
        assert_eq!(c.client_secret.expose_secret(), "abc~def");
        assert_eq!(c.notes.len(), 1);
        assert!(c.notes[0].contains("line break"));
        assert!(!c.notes[0].contains("abc"));
    }

    #[test]
    fn inner_whitespace_and_empty_are_refused() {
        assert_eq!(
            check(&raw(TENANT, CLIENT, b"abc def")).unwrap_err().reason,
            "MalformedSecret"
        );
        assert_eq!(
            check(&raw(TENANT, CLIENT, b" \n")).unwrap_err().reason,
            "EmptySecret"
        );
        assert_eq!(
            check(&raw(TENANT, CLIENT, &[0xff, 0xfe]))
                .unwrap_err()
                .reason,
            "MalformedSecret"
        );
    }

    #[test]
    fn host_overrides_must_be_https_or_loopback_http() {
        let ok = |h: &str| check_host(Some(h), "d", "x").is_ok();
        assert!(ok("https://login.example.test"));
        assert!(ok("http://127.0.0.1:8080"));
        assert!(ok("http://localhost:1234"));
        assert!(ok("http://[::1]:9"));
        assert!(!ok("http://login.example.test"));
        assert!(!ok("ftp://x"));
        assert!(!ok("https://x/?a=b"));
        assert_eq!(check_host(None, "https://d", "x").unwrap(), "https://d");
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("MICROSOFT_CLIENT_ID"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
    }
}
