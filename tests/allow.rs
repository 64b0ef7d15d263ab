//! The operator's allow-lists (src/allow.rs): entry syntax, matching on host and port as
//! written (no port: the scheme's default; `:*`: any), `{namespace}`, the defaults (the
//! Microsoft clouds, the integration's own namespace's Services; nothing private), the http
//! rule, and the mail collections.

use nocobase_mail_operator::allow::*;

fn p(s: &str) -> HostPattern {
    HostPattern::parse(s).unwrap()
}

#[test]
fn patterns_parse_and_print() {
    for (given, shown) in [
        ("login.microsoftonline.com", "login.microsoftonline.com"),
        ("LOGIN.microsoftonline.com", "login.microsoftonline.com"),
        ("*.svc", "*.svc"),
        (".svc", "*.svc"),
        ("*.svc.cluster.local:13000", "*.svc.cluster.local:13000"),
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("127.1:8080", "127.0.0.1:8080"),
        ("[::1]:9", "[::1]:9"),
        ("[::1]", "[::1]"),
        ("host.example:443", "host.example:443"),
        ("host.example:*", "host.example:*"),
        ("*.{namespace}.svc:*", "*.{namespace}.svc:*"),
        ("nocobase.{namespace}.svc", "nocobase.{namespace}.svc"),
    ] {
        assert_eq!(p(given).to_string(), shown, "{given}");
    }
    for bad in [
        "",
        " ",
        "https://login.microsoftonline.com",
        "host/path",
        "user@host",
        "a.*.svc",
        "*",
        "*.",
        "host:0",
        "host:99999",
        "host:x",
        "[::1",
        "[::1]x",
        "::1",
        "exa mple.com",
        "*:*",
        "host:**",
        "*.{name}.svc",
        "*.x{namespace}.svc",
        "{namespace}x.svc",
    ] {
        assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
    }
}

/// `matches` for an https URL outside any namespace.
fn m(pattern: &HostPattern, host: &str, port: u16) -> bool {
    pattern.matches("https", host, port, None)
}

#[test]
fn exact_entries_match_host_and_port_as_written() {
    let default = p("login.microsoftonline.com");
    assert!(m(&default, "login.microsoftonline.com", 443));
    assert!(m(&default, "login.microsoftonline.com.", 443));
    // no port written: the scheme's default port only (issue 19 item 4: `:1` never answers)
    assert!(!m(&default, "login.microsoftonline.com", 8443));
    assert!(!m(&default, "login.microsoftonline.com", 1));
    assert!(default.matches("http", "login.microsoftonline.com", 80, None));
    assert!(!default.matches("http", "login.microsoftonline.com", 443, None));
    assert!(!m(&default, "login.microsoftonline.com.evil.test", 443));
    assert!(!m(&default, "evil-login.microsoftonline.com", 443));
    assert!(!m(&default, "xlogin.microsoftonline.com", 443));
    let any = p("login.example:*");
    assert!(m(&any, "login.example", 1) && m(&any, "login.example", 8443));
    let port = p("127.0.0.1:8080");
    assert!(m(&port, "127.0.0.1", 8080));
    assert!(!m(&port, "127.0.0.1", 8081));
    assert!(!m(&port, "localhost", 8080));
    assert!(m(&p("[::1]:9"), "[::1]", 9));
}

#[test]
fn wildcards_match_subdomains_only() {
    let svc = p("*.svc:*");
    assert!(m(&svc, "nocobase.nocobase.svc", 13000));
    assert!(!m(&svc, "svc", 80));
    assert!(!m(&svc, "nocobase.svc.evil.test", 80));
    assert!(!m(&svc, "evilsvc", 80));
    assert!(!m(&svc, "x.evilsvc", 80));
    // the API server's own Service needs an exact entry
    assert!(!m(&svc, "kubernetes.default.svc", 443));
    assert!(m(
        &p("kubernetes.default.svc"),
        "kubernetes.default.svc",
        443
    ));
    let port = p("*.svc:13000");
    assert!(m(&port, "a.b.svc", 13000));
    assert!(!m(&port, "a.b.svc", 80));
}

#[test]
fn namespace_entries_match_the_integrations_own_namespace_only() {
    let own = p("*.{namespace}.svc:*");
    assert!(own.matches("http", "nocobase.team.svc", 13000, Some("team")));
    assert!(own.matches("http", "nb.team.svc.", 80, Some("team")));
    // another namespace's Service (issue 19 item 1: collector.attacker.svc)
    assert!(!own.matches("http", "collector.attacker.svc", 13000, Some("team")));
    assert!(!own.matches("http", "x.team.svc.attacker.svc", 80, Some("team")));
    assert!(!own.matches("http", "team.svc", 80, Some("team")));
    // outside an integration, or without a namespace, it matches nothing
    assert!(!own.matches("http", "nocobase.team.svc", 13000, None));
    assert!(!own.matches("http", "nocobase..svc", 13000, Some("")));
    let exact = p("nocobase.{namespace}.svc:13000");
    assert!(exact.matches("http", "nocobase.team.svc", 13000, Some("team")));
    assert!(!exact.matches("http", "other.team.svc", 13000, Some("team")));
    assert!(!exact.matches("http", "nocobase.ops.svc", 13000, Some("team")));
}

#[test]
fn the_default_nocobase_list_is_the_integrations_namespace() {
    let l = AllowList::default();
    let at = |url: &str, ns: &str| l.check_in(Endpoint::NocoBase, url, Some(ns)).err();
    for url in [
        "http://nocobase.team.svc:13000",
        "http://nocobase.team.svc.cluster.local:13000/",
        "https://nocobase.team.svc.cluster.local/nb",
    ] {
        assert!(at(url, "team").is_none(), "{url}");
    }
    let refused = at("http://collector.attacker.svc:8080", "team").unwrap();
    assert_eq!(refused.reason, HOST_NOT_ALLOWED);
    assert!(
        refused.message.contains("{namespace}"),
        "{}",
        refused.message
    );
    assert!(refused.message.contains("team"), "{}", refused.message);
    assert!(
        refused.message.contains("Nothing was sent"),
        "{}",
        refused.message
    );
}

#[test]
fn mail_collections_default_to_the_email_managers_own() {
    let l = AllowList::default();
    assert!(l.check_mail_collection("mailSettings").is_ok());
    for other in ["users", "environmentVariables", "mailSettingsX", ""] {
        let e = l.check_mail_collection(other).unwrap_err();
        assert_eq!(e.reason, COLLECTION_NOT_ALLOWED, "{other}");
        assert!(
            e.message.contains("--allowed-mail-collections"),
            "{}",
            e.message
        );
        assert!(e.message.contains("mailSettings"), "{}", e.message);
    }
    let given = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let l = AllowList::default()
        .with_mail_collections(&given(&["mailSettings", "mail_eu"]))
        .unwrap();
    assert!(l.check_mail_collection("mail_eu").is_ok());
    assert!(l.check_mail_collection("users").is_err());
    assert!(
        AllowList::default()
            .with_mail_collections(&given(&["a b"]))
            .is_err()
    );
    assert!(
        AllowList::default()
            .with_mail_collections(&given(&["1x"]))
            .is_err()
    );
    assert!(!AllowList::default().inject_unverified());
    assert!(
        AllowList::default()
            .with_inject_unverified(true)
            .inject_unverified()
    );
}

fn reason(l: &AllowList, e: Endpoint, url: &str) -> Option<&'static str> {
    l.check(e, url).err().map(|p| p.reason)
}

#[test]
fn defaults_allow_the_microsoft_clouds_and_in_cluster_services() {
    let l = AllowList::default();
    for url in DEFAULT_AUTHORITY_HOSTS {
        assert_eq!(
            reason(&l, Endpoint::Authority, &format!("https://{url}")),
            None
        );
    }
    for cloud in [
        nocobase_mail_operator::api::Cloud::AzurePublic,
        nocobase_mail_operator::api::Cloud::AzureUSGovernment,
        nocobase_mail_operator::api::Cloud::AzureChina,
    ] {
        assert_eq!(
            reason(&l, Endpoint::Authority, cloud.authority_host()),
            None
        );
        assert_eq!(reason(&l, Endpoint::Graph, cloud.graph_host()), None);
    }
    for url in [
        "http://nocobase.nocobase.svc:13000",
        "http://nocobase.nocobase.svc.cluster.local:13000/",
        "https://nocobase.nocobase.svc.cluster.local/nb",
    ] {
        let in_ns = l.check_in(Endpoint::NocoBase, url, Some("nocobase"));
        assert!(in_ns.is_ok(), "{url}");
        // outside any integration (no namespace), none is allowed
        assert_eq!(reason(&l, Endpoint::NocoBase, url), Some(HOST_NOT_ALLOWED));
    }
}

#[test]
fn defaults_hold_no_loopback_link_local_or_private_address() {
    let l = AllowList::default();
    for host in [
        "localhost",
        "127.0.0.1",
        "127.0.0.53",
        "[::1]",
        "0.0.0.0",
        "169.254.169.254",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "[fd00::1]",
        "[fe80::1]",
        "metadata.google.internal",
        "kubernetes.default.svc",
        "nocobase",
    ] {
        for e in [Endpoint::Authority, Endpoint::Graph, Endpoint::NocoBase] {
            for scheme in ["http", "https"] {
                let url = format!("{scheme}://{host}:8080/");
                assert_eq!(reason(&l, e, &url), Some(HOST_NOT_ALLOWED), "{url} {e:?}");
            }
        }
    }
    // a URL the parser rewrites is judged as the parser (and so the connection) sees it
    assert_eq!(
        reason(&l, Endpoint::NocoBase, "http://0x7f.1:8080"),
        Some(HOST_NOT_ALLOWED)
    );
}

#[test]
fn other_hosts_are_refused_with_the_flag_to_change() {
    let l = AllowList::default();
    let e = l
        .check(Endpoint::Authority, "https://attacker.example/x")
        .unwrap_err();
    assert_eq!(e.reason, HOST_NOT_ALLOWED);
    assert!(
        e.message.contains("--allowed-authority-hosts"),
        "{}",
        e.message
    );
    assert!(e.message.contains("attacker.example"), "{}", e.message);
    assert!(
        e.message.contains("login.microsoftonline.com"),
        "{}",
        e.message
    );
    let e = l
        .check(Endpoint::Graph, "https://graph.microsoft.com.evil")
        .unwrap_err();
    assert!(e.message.contains("--allowed-graph-hosts"));
    let e = l
        .check(Endpoint::NocoBase, "http://10.0.0.5:13000")
        .unwrap_err();
    assert!(e.message.contains("--allowed-nocobase-urls"));
    assert_eq!(
        reason(&l, Endpoint::NocoBase, "ftp://a.b.svc"),
        Some(HOST_NOT_ALLOWED)
    );
    assert_eq!(
        reason(&l, Endpoint::NocoBase, "not a url"),
        Some(HOST_NOT_ALLOWED)
    );
}

#[test]
fn http_only_for_listed_in_cluster_services_and_loopback() {
    let given = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let l = AllowList::new(
        &given(&["login.example.test", "127.0.0.1:8080"]),
        &given(&["graph.example.test"]),
        &given(&["nocobase.example.test", "*.svc:*", "[::1]:*", "localhost:*"]),
    )
    .unwrap();
    assert_eq!(
        reason(&l, Endpoint::Authority, "https://login.example.test"),
        None
    );
    assert_eq!(
        reason(&l, Endpoint::Authority, "http://login.example.test"),
        Some(HOST_NOT_ALLOWED)
    );
    assert_eq!(
        reason(&l, Endpoint::Authority, "http://127.0.0.1:8080"),
        None
    );
    assert_eq!(
        reason(&l, Endpoint::Authority, "http://127.0.0.1:8081"),
        Some(HOST_NOT_ALLOWED)
    );
    assert_eq!(
        reason(&l, Endpoint::Authority, "https://login.microsoftonline.com"),
        Some(HOST_NOT_ALLOWED),
        "a given list replaces the default"
    );
    assert_eq!(
        reason(&l, Endpoint::NocoBase, "http://nb.ns.svc:13000"),
        None
    );
    assert_eq!(reason(&l, Endpoint::NocoBase, "http://[::1]:13000"), None);
    assert_eq!(
        reason(&l, Endpoint::NocoBase, "http://localhost:13000"),
        None
    );
    assert_eq!(
        reason(&l, Endpoint::NocoBase, "http://nocobase.example.test"),
        Some(HOST_NOT_ALLOWED)
    );
    assert_eq!(
        reason(&l, Endpoint::NocoBase, "https://nocobase.example.test"),
        None
    );
    assert_eq!(
        reason(&l, Endpoint::Graph, "https://graph.example.test"),
        None
    );
    // an empty list keeps the default
    let d = AllowList::new(&[], &[], &[]).unwrap();
    assert_eq!(d, AllowList::default());
    assert!(AllowList::new(&given(&["https://x"]), &[], &[]).is_err());
}

#[test]
fn service_and_loopback_names() {
    assert!(is_in_cluster_service("nocobase.nocobase.svc"));
    assert!(is_in_cluster_service("nocobase.nocobase.svc.cluster.local"));
    assert!(!is_in_cluster_service("nocobase.svc"));
    assert!(!is_in_cluster_service("a.svc.evil.test"));
    assert!(is_loopback("127.0.0.1") && is_loopback("127.8.0.1"));
    assert!(is_loopback("[::1]") && is_loopback("localhost"));
    assert!(!is_loopback("10.0.0.1") && !is_loopback("localhost.evil.test"));
}
