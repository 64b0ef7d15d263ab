//! Operator-level allow-lists of the hosts the controller may send a credential to (pure).
//!
//! Whoever may create a `MicrosoftMailIntegration` chooses `authorityHost`, `graphHost` and
//! `nocobase.url`, and the operator sends a Secret of the namespace there (the client secret
//! to the authority host, the NocoBase API key to NocoBase). These lists, set by the
//! operator's administrator with `--allowed-authority-hosts`, `--allowed-graph-hosts` and
//! `--allowed-nocobase-urls`, bound where that can be. A URL is checked before any request:
//! one outside its list is never connected to.
//!
//! Entries match the URL's host and port as written, like `NO_PROXY` entries, with no DNS
//! resolution (a name that resolves to a private address is matched by its name; an
//! address is matched as an address). Forms: `login.microsoftonline.com` (that host, any
//! port), `*.svc` or `.svc` (any host ending with `.svc`), `host:port` and `*.svc:13000`
//! (that port only), `127.0.0.1:8080`, `[::1]:8080`.

use std::fmt;

use crate::input::InputProblem;

/// Reason of a condition when a URL is outside its allow-list.
pub const HOST_NOT_ALLOWED: &str = "HostNotAllowed";

/// The login hosts of the three Microsoft clouds (public, US Government, China).
pub const DEFAULT_AUTHORITY_HOSTS: &[&str] = &[
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
];
/// The Microsoft Graph hosts of the three clouds.
pub const DEFAULT_GRAPH_HOSTS: &[&str] = &[
    "graph.microsoft.com",
    "graph.microsoft.us",
    "microsoftgraph.chinacloudapi.cn",
];
/// In-cluster Service names, where NocoBase's Service normally is.
pub const DEFAULT_NOCOBASE_HOSTS: &[&str] = &["*.svc", "*.svc.cluster.local"];

/// Names of the Kubernetes API server's own Service: a wildcard such as `*.svc` never
/// matches them (only an exact entry does), so a NocoBase API key is not sent there.
const API_SERVER_NAMES: &[&str] = &[
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// Which endpoint a URL is for: selects the list, and names the flag and field in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Authority,
    Graph,
    NocoBase,
}

impl Endpoint {
    /// The `run` flag that lists the allowed hosts.
    pub fn flag(self) -> &'static str {
        match self {
            Endpoint::Authority => "--allowed-authority-hosts",
            Endpoint::Graph => "--allowed-graph-hosts",
            Endpoint::NocoBase => "--allowed-nocobase-urls",
        }
    }

    /// The Helm value that sets the flag.
    pub fn helm_value(self) -> &'static str {
        match self {
            Endpoint::Authority => "allowedHosts.authority",
            Endpoint::Graph => "allowedHosts.graph",
            Endpoint::NocoBase => "allowedHosts.nocobase",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Endpoint::Authority => "the authority host",
            Endpoint::Graph => "the Graph host",
            Endpoint::NocoBase => "spec.nocobase.url",
        }
    }
}

/// One allow-list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    /// `*.suffix`: any host ending with `.suffix`.
    wildcard: bool,
    /// Lower case, as the URL parser writes hosts (IPv6 in brackets).
    host: String,
    /// `None`: any port.
    port: Option<u16>,
}

impl HostPattern {
    /// Parses `host`, `*.suffix`, `.suffix`, `host:port`, `[v6]:port`.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let e = entry.trim().to_ascii_lowercase();
        let bad = |why: &str| format!("allow-list entry {entry:?} {why}");
        if e.is_empty() {
            return Err(bad("is empty"));
        }
        if e.contains("://") || e.contains('/') || e.contains('@') {
            return Err(bad(
                "must be a host or host:port, without scheme, path or user",
            ));
        }
        let (wildcard, rest) = match e.strip_prefix("*.").or_else(|| e.strip_prefix('.')) {
            Some(r) => (true, r),
            None => (false, e.as_str()),
        };
        let (host, port) = split_port(rest).map_err(|w| bad(&w))?;
        if wildcard {
            let labels_ok = host.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            });
            if !labels_ok {
                return Err(bad("has a wildcard suffix that is not a DNS name"));
            }
            return Ok(Self {
                wildcard,
                host: host.to_owned(),
                port,
            });
        }
        if host.contains('*') {
            return Err(bad("may hold a wildcard only as its first label (*.svc)"));
        }
        // The URL parser's own spelling, so that `127.1` or `[0::1]` match what a URL holds.
        let url = url::Url::parse(&format!("http://{host}/"))
            .map_err(|_| bad("is not a host name or IP address"))?;
        let host = url
            .host_str()
            .ok_or_else(|| bad("is not a host name or IP address"))?;
        Ok(Self {
            wildcard,
            host: host.trim_end_matches('.').to_owned(),
            port,
        })
    }

    /// Whether a URL's host (as the URL parser writes it) and port match this entry.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.');
        let host_ok = if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
                && !API_SERVER_NAMES.contains(&host)
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// `host[:port]` or `[v6][:port]`; a bare IPv6 address has no port.
fn split_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("has an invalid port {p:?}"))
    };
    if s.starts_with('[') {
        let end = s.find(']').ok_or("has an unclosed [")?;
        let (host, rest) = s.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(p) => Ok((host, Some(parse_port(p)?))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err("has text after the IPv6 address".into()),
        };
    }
    match s.split_once(':') {
        Some((h, p)) if !p.contains(':') => Ok((h, Some(parse_port(p)?))),
        // several colons: a bare IPv6 address, written with brackets as URLs hold it
        Some(_) => Err("is a bare IPv6 address: write it in brackets, [::1] or [::1]:8080".into()),
        None => Ok((s, None)),
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.host)?;
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// The three lists the controller enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList {
    authority: Vec<HostPattern>,
    graph: Vec<HostPattern>,
    nocobase: Vec<HostPattern>,
}

impl Default for AllowList {
    /// The three Microsoft clouds, and in-cluster Service names for NocoBase.
    fn default() -> Self {
        let parse = |l: &[&str]| {
            l.iter()
                .map(|e| HostPattern::parse(e).expect("the defaults parse"))
                .collect()
        };
        Self {
            authority: parse(DEFAULT_AUTHORITY_HOSTS),
            graph: parse(DEFAULT_GRAPH_HOSTS),
            nocobase: parse(DEFAULT_NOCOBASE_HOSTS),
        }
    }
}

impl AllowList {
    /// Lists as given on the command line; an empty list keeps that list's default.
    pub fn new(
        authority: &[String],
        graph: &[String],
        nocobase: &[String],
    ) -> Result<Self, String> {
        let d = Self::default();
        let parse = |given: &[String], default: Vec<HostPattern>| -> Result<_, String> {
            if given.is_empty() {
                return Ok(default);
            }
            given.iter().map(|e| HostPattern::parse(e)).collect()
        };
        Ok(Self {
            authority: parse(authority, d.authority)?,
            graph: parse(graph, d.graph)?,
            nocobase: parse(nocobase, d.nocobase)?,
        })
    }

    fn list(&self, endpoint: Endpoint) -> &[HostPattern] {
        match endpoint {
            Endpoint::Authority => &self.authority,
            Endpoint::Graph => &self.graph,
            Endpoint::NocoBase => &self.nocobase,
        }
    }

    /// The entries of one list, as written in messages and logs.
    pub fn entries(&self, endpoint: Endpoint) -> Vec<String> {
        self.list(endpoint)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Whether the operator may send a request to `url` for `endpoint`: its host and port
    /// match an entry, and it is `https://`, or `http://` to a listed in-cluster Service
    /// name or loopback address. Otherwise a `HostNotAllowed` problem naming the flag.
    pub fn check(&self, endpoint: Endpoint, url: &str) -> Result<(), InputProblem> {
        let refuse = |why: String| InputProblem {
            reason: HOST_NOT_ALLOWED,
            message: format!(
                "{why} Nothing was sent. An administrator of the operator can allow it with {} (Helm value {}).",
                endpoint.flag(),
                endpoint.helm_value()
            ),
        };
        let field = endpoint.field();
        let shown = url.trim().escape_debug().to_string();
        let parsed = url::Url::parse(url.trim()).ok();
        let target = parsed.as_ref().and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some((u.scheme().to_owned(), host, u.port_or_known_default()?))
        });
        let Some((scheme, host, port)) = target.filter(|(s, ..)| s == "http" || s == "https")
        else {
            return Err(refuse(format!(
                "{field} '{shown}' is not an http(s) URL with a host."
            )));
        };
        if !self.list(endpoint).iter().any(|p| p.matches(&host, port)) {
            return Err(refuse(format!(
                "{field} '{shown}' (host {host}, port {port}) is not in the operator's allow-list {} = {}.",
                endpoint.flag(),
                self.entries(endpoint).join(",")
            )));
        }
        if scheme == "http" && !(is_in_cluster_service(&host) || is_loopback(&host)) {
            return Err(refuse(format!(
                "{field} '{shown}' uses http://, which is allowed only for in-cluster Service names (<service>.<namespace>.svc) and loopback addresses; use https://."
            )));
        }
        Ok(())
    }
}

/// What is wrong on the resource's face, found before any Secret is read or anything is
/// sent: a name too long for the objects derived from it, an empty Deployment selector
/// (which would select every Deployment of the namespace), host overrides that are not
/// URLs, and hosts outside the operator's allow-lists. Checked first, so that an
/// integration the operator will not serve learns nothing about the Secrets it names.
pub fn check_resource(
    name: &str,
    spec: &crate::api::MicrosoftMailIntegrationSpec,
    allow: &AllowList,
) -> Result<(), InputProblem> {
    if name.len() > crate::input::MAX_NAME_LEN {
        return Err(InputProblem::new(
            "NameTooLong",
            format!(
                "the integration's name has {} characters; at most {} are allowed, because it labels the managed Secret <name>-microsoft-credentials. Re-create it under a shorter name.",
                name.len(),
                crate::input::MAX_NAME_LEN
            ),
        ));
    }
    if let Some(idx) = spec
        .targets
        .iter()
        .position(crate::input::selects_everything)
    {
        return Err(InputProblem::new(
            "EmptySelector",
            format!(
                "targets[{idx}].deploymentSelector is empty, which would select every Deployment of the namespace: give matchLabels or matchExpressions, or use deploymentName."
            ),
        ));
    }
    let authority = crate::input::check_host(
        spec.authority_host.as_deref(),
        spec.cloud.authority_host(),
        "authority host",
    )?;
    let graph = crate::input::check_host(
        spec.graph_host.as_deref(),
        spec.cloud.graph_host(),
        "Graph host",
    )?;
    allow.check(Endpoint::Authority, &authority)?;
    allow.check(Endpoint::Graph, &graph)
}

/// `<service>.<namespace>.svc`, optionally followed by the cluster domain.
pub fn is_in_cluster_service(host: &str) -> bool {
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    labels.len() >= 3 && labels[2] == "svc" && labels[..2].iter().all(|l| !l.is_empty())
}

/// `localhost`, 127.0.0.0/8 or `[::1]`, as the URL parser writes them.
pub fn is_loopback(host: &str) -> bool {
    if host == "localhost" || host == "[::1]" {
        return true;
    }
    host.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|a| a.is_loopback())
}
