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
//! address is matched as an address). Forms: `login.microsoftonline.com` (that host on the
//! scheme's default port, 443 for https), `*.svc` or `.svc` (any host ending with `.svc`),
//! `host:port` and `*.svc:13000` (that port), `host:*` (any port), `127.0.0.1:8080`,
//! `[::1]:8080`. A label `{namespace}` stands for the integration's own namespace, so
//! `*.{namespace}.svc:*` (the NocoBase default) matches the Services of the integration's
//! namespace only: an author cannot point the operator, and the namespace's API key, at a
//! Service of another namespace.

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
/// The Services of the integration's own namespace, on any port: where NocoBase's Service
/// normally is. A Service of another namespace needs an entry of the administrator's.
pub const DEFAULT_NOCOBASE_HOSTS: &[&str] =
    &["*.{namespace}.svc:*", "*.{namespace}.svc.cluster.local:*"];

/// The label of an entry that stands for the integration's namespace.
pub const NAMESPACE_LABEL: &str = "{namespace}";

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

/// Which ports an entry matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ports {
    /// No port written: the scheme's default port (443, or 80 for http), as a URL without
    /// a port means; so `login.microsoftonline.com` does not admit `:1`.
    SchemeDefault,
    /// `:*`.
    Any,
    One(u16),
}

/// One allow-list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    /// `*.suffix`: any host ending with `.suffix`.
    wildcard: bool,
    /// Lower case, as the URL parser writes hosts (IPv6 in brackets); may hold the label
    /// [`NAMESPACE_LABEL`].
    host: String,
    ports: Ports,
}

impl HostPattern {
    /// Parses `host`, `*.suffix`, `.suffix`, `host:port`, `host:*`, `[v6]:port`, with
    /// `{namespace}` as a whole label of a name.
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
        let (host, ports) = split_port(rest).map_err(|w| bad(&w))?;
        if wildcard || host.contains(NAMESPACE_LABEL) {
            let labels_ok = host.split('.').all(|l| {
                l == NAMESPACE_LABEL
                    || (!l.is_empty() && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
            });
            if !labels_ok {
                return Err(bad(
                    "is not a DNS name ({namespace} may only stand as a whole label)",
                ));
            }
            return Ok(Self {
                wildcard,
                host: host.to_owned(),
                ports,
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
            ports,
        })
    }

    /// Whether a URL's scheme, host (as the URL parser writes it) and port match this
    /// entry, for an integration in `namespace` (`None`: no integration, so an entry naming
    /// `{namespace}` matches nothing).
    pub fn matches(&self, scheme: &str, host: &str, port: u16, namespace: Option<&str>) -> bool {
        let own;
        let pattern = if self.host.contains(NAMESPACE_LABEL) {
            let Some(ns) = namespace.filter(|n| !n.is_empty()) else {
                return false;
            };
            own = self.host.replace(NAMESPACE_LABEL, ns);
            own.as_str()
        } else {
            self.host.as_str()
        };
        let host = host.trim_end_matches('.');
        let host_ok = if self.wildcard {
            host.len() > pattern.len() + 1
                && host.ends_with(pattern)
                && host.as_bytes()[host.len() - pattern.len() - 1] == b'.'
                && !API_SERVER_NAMES.contains(&host)
        } else {
            host == pattern
        };
        let port_ok = match self.ports {
            Ports::Any => true,
            Ports::One(p) => p == port,
            Ports::SchemeDefault => {
                url::Url::parse(&format!("{scheme}://x/"))
                    .ok()
                    .and_then(|u| u.port_or_known_default())
                    == Some(port)
            }
        };
        host_ok && port_ok
    }
}

/// `host[:port]` or `[v6][:port]`, port `*` for any; a bare IPv6 address has no port.
fn split_port(s: &str) -> Result<(&str, Ports), String> {
    let parse_port = |p: &str| {
        if p == "*" {
            return Ok(Ports::Any);
        }
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .map(Ports::One)
            .ok_or_else(|| format!("has an invalid port {p:?}"))
    };
    if s.starts_with('[') {
        let end = s.find(']').ok_or("has an unclosed [")?;
        let (host, rest) = s.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(p) => Ok((host, parse_port(p)?)),
            None if rest.is_empty() => Ok((host, Ports::SchemeDefault)),
            None => Err("has text after the IPv6 address".into()),
        };
    }
    match s.split_once(':') {
        Some((h, p)) if !p.contains(':') => Ok((h, parse_port(p)?)),
        // several colons: a bare IPv6 address, written with brackets as URLs hold it
        Some(_) => Err("is a bare IPv6 address: write it in brackets, [::1] or [::1]:8080".into()),
        None => Ok((s, Ports::SchemeDefault)),
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.host)?;
        match self.ports {
            Ports::One(p) => write!(f, ":{p}"),
            Ports::Any => f.write_str(":*"),
            Ports::SchemeDefault => Ok(()),
        }
    }
}

/// Reason of the `MailSettingsSynced` condition for a collection outside
/// `--allowed-mail-collections`.
pub const COLLECTION_NOT_ALLOWED: &str = "CollectionNotAllowed";

/// Where the controller may send a value: the three host lists, the NocoBase collections
/// the client secret may be written into, and whether unverified credentials may reach a
/// Deployment at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList {
    authority: Vec<HostPattern>,
    graph: Vec<HostPattern>,
    nocobase: Vec<HostPattern>,
    /// `--allowed-mail-collections`: `spec.nocobase.mailSettings.collection` must be one.
    mail_collections: Vec<String>,
    /// `--allow-inject-unverified`: whether `spec.injectUnverified` is honoured.
    inject_unverified: bool,
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
            mail_collections: vec![crate::api::DEFAULT_MAIL_COLLECTION.to_owned()],
            inject_unverified: false,
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
            ..d
        })
    }

    /// The collections the email manager's settings may be written into (an empty list
    /// keeps the default, the email manager's own `mailSettings`).
    pub fn with_mail_collections(mut self, collections: &[String]) -> Result<Self, String> {
        let given: Vec<String> = collections.iter().map(|c| c.trim().to_owned()).collect();
        if let Some(bad) = given.iter().find(|c| !crate::nocobase::valid_collection(c)) {
            return Err(format!(
                "--allowed-mail-collections entry {bad:?} is not a NocoBase collection name (letters, digits and _, not starting with a digit)"
            ));
        }
        if !given.is_empty() {
            self.mail_collections = given;
        }
        Ok(self)
    }

    /// Whether `spec.injectUnverified` is honoured (`--allow-inject-unverified`).
    pub fn with_inject_unverified(mut self, allowed: bool) -> Self {
        self.inject_unverified = allowed;
        self
    }

    pub fn inject_unverified(&self) -> bool {
        self.inject_unverified
    }

    pub fn mail_collections(&self) -> &[String] {
        &self.mail_collections
    }

    /// Whether the client secret may be written into `collection`; otherwise a
    /// `CollectionNotAllowed` problem naming the flag. Checked before any request.
    pub fn check_mail_collection(&self, collection: &str) -> Result<(), InputProblem> {
        if self.mail_collections.iter().any(|c| c == collection) {
            return Ok(());
        }
        Err(InputProblem {
            reason: COLLECTION_NOT_ALLOWED,
            message: format!(
                "spec.nocobase.mailSettings.collection {} is not among the collections this operator writes credentials into ({}). Nothing was sent. An administrator of the operator can allow it with --allowed-mail-collections (Helm value allowedMailCollections).",
                crate::quote::name(collection),
                crate::quote::list(&self.mail_collections, ", ")
            ),
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

    /// [`Self::check_in`] outside any integration (`check`, `register`): entries naming
    /// `{namespace}` match nothing.
    pub fn check(&self, endpoint: Endpoint, url: &str) -> Result<(), InputProblem> {
        self.check_in(endpoint, url, None)
    }

    /// Whether the operator may send a request to `url` for `endpoint`, for an integration
    /// in `namespace`: its host and port match an entry, and it is `https://`, or `http://`
    /// to a listed in-cluster Service name or loopback address. Otherwise a
    /// `HostNotAllowed` problem naming the flag.
    pub fn check_in(
        &self,
        endpoint: Endpoint,
        url: &str,
        namespace: Option<&str>,
    ) -> Result<(), InputProblem> {
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
        let listed = self.list(endpoint);
        if !listed
            .iter()
            .any(|p| p.matches(&scheme, &host, port, namespace))
        {
            let ns_note = namespace
                .filter(|_| listed.iter().any(|p| p.host.contains(NAMESPACE_LABEL)))
                .map(|ns| format!(" ({{namespace}} is this integration's namespace, {ns})"))
                .unwrap_or_default();
            return Err(refuse(format!(
                "{field} '{shown}' (host {host}, port {port}) is not in the operator's allow-list {} = {}{ns_note}.",
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
