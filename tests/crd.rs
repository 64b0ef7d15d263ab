//! The CRD: generated file in sync, descriptions for `kubectl explain`, CEL rules that
//! compile, stay within the API server's cost budget, and agree with `crate::input`,
//! and an example that the API server would accept.

use kube::CustomResourceExt;
use kube_cel::{ScopeContext, Validator, WarningKind, analyze_rule, compile_schema};
use nocobase_mail_operator::api::MicrosoftMailIntegration;
use nocobase_mail_operator::crdgen::crd_yaml;
use nocobase_mail_operator::input;
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = MicrosoftMailIntegration::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn checked_in_crd_matches_generated() {
    let on_disk = std::fs::read_to_string("crds/microsoftmailintegrations.yaml").unwrap();
    assert!(
        on_disk == crd_yaml(),
        "crds/microsoftmailintegrations.yaml is stale: run `cargo run -- crd > crds/microsoftmailintegrations.yaml`"
    );
}

#[test]
fn binary_crd_command_prints_the_same() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nocobase-mail-operator"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), crd_yaml());
}

/// Every field under spec (and status) carries a description, which `kubectl explain` shows.
#[test]
fn every_field_has_a_description() {
    fn walk(path: &str, node: &Value, missing: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                let p = format!("{path}.{name}");
                if child
                    .get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    missing.push(p.clone());
                }
                walk(&p, child, missing);
            }
        }
        if let Some(items) = node.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let s = schema();
    let mut missing = Vec::new();
    walk("spec", &s["properties"]["spec"], &mut missing);
    walk("status", &s["properties"]["status"], &mut missing);
    assert!(
        missing.is_empty(),
        "fields without description: {missing:?}"
    );
}

#[test]
fn crd_names_columns_and_subresources() {
    let crd = MicrosoftMailIntegration::crd();
    assert_eq!(crd.spec.group, "nocobase-mail-operator.dev");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["mmi".to_owned()][..])
    );
    assert!(
        crd.spec
            .names
            .categories
            .as_ref()
            .unwrap()
            .contains(&"nocobase".to_owned())
    );
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let cols: Vec<&str> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for want in ["Ready", "Valid", "Expires", "Age"] {
        assert!(
            cols.contains(&want),
            "missing printer column {want}: {cols:?}"
        );
    }
}

/// Every CEL rule compiles and stays within the API server's per-rule cost budget (an
/// unbounded string or list makes the API server refuse the whole CRD).
#[test]
fn cel_rules_compile_and_are_affordable() {
    fn walk(node: &Value, found: &mut usize) {
        if let Some(rules) = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            let compiled = compile_schema(node);
            assert!(
                !compiled.has_errors(),
                "rule does not compile: {:?}",
                compiled.compilation_errors()
            );
            for r in rules {
                *found += 1;
                let rule = r["rule"].as_str().unwrap();
                let warnings: Vec<_> = analyze_rule(rule, &compiled, ScopeContext::CrdValidation)
                    .into_iter()
                    // kube-cel's scope check does not know comprehension variables (`all(d, ...)`)
                    .filter(|w| {
                        !(w.kind == WarningKind::WrongScope && w.message.contains("variable 'd'"))
                    })
                    .collect();
                assert!(warnings.is_empty(), "{rule}: {warnings:?}");
            }
        }
        for key in ["properties"] {
            if let Some(props) = node.get(key).and_then(Value::as_object) {
                props.values().for_each(|c| walk(c, found));
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, found);
        }
    }
    let mut found = 0;
    walk(&schema(), &mut found);
    assert!(
        found >= 10,
        "expected the CEL rules to be present, found {found}"
    );
}

fn valid_spec() -> Value {
    json!({
        "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "clientId": "11111111-2222-4333-8444-555555555555",
        "clientSecretRef": {"name": "s"},
    })
}

fn admit(spec: Value) -> Result<(), String> {
    admit_named("x", spec)
}

fn admit_named(name: &str, spec: Value) -> Result<(), String> {
    let obj = json!({"apiVersion": "nocobase-mail-operator.dev/v1alpha1", "kind": "MicrosoftMailIntegration",
        "metadata": {"name": name, "namespace": "ns"}, "spec": spec});
    structural_check("", &schema(), &obj)?;
    Validator::new()
        .validate(&schema(), &obj, None)
        .map_err(|e| e.to_string())
}

/// What the API server checks before CEL: known fields (unknown ones would be pruned
/// silently), types, enums, required fields, string and list bounds.
fn structural_check(path: &str, schema: &Value, value: &Value) -> Result<(), String> {
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return Ok(());
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match ty {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("integer") => value.is_i64() || value.is_u64(),
        _ => true,
    };
    if !type_ok {
        return Err(format!("{path}: expected {ty:?}, got {value}"));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(value)
    {
        return Err(format!("{path}: {value} not one of {e:?}"));
    }
    if let (Some(s), Some(max)) = (
        value.as_str(),
        schema.get("maxLength").and_then(Value::as_u64),
    ) && s.chars().count() as u64 > max
    {
        return Err(format!("{path}: longer than {max}"));
    }
    if let (Some(s), Some("date-time")) =
        (value.as_str(), schema.get("format").and_then(Value::as_str))
        && s.parse::<jiff::Timestamp>().is_err()
    {
        return Err(format!("{path}: must be an RFC 3339 date-time"));
    }
    if let (Some(a), Some(max)) = (
        value.as_array(),
        schema.get("maxItems").and_then(Value::as_u64),
    ) && a.len() as u64 > max
    {
        return Err(format!("{path}: more than {max} items"));
    }
    if let Some(obj) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !obj.contains_key(req.as_str().unwrap()) {
                return Err(format!("{path}: missing required field {req}"));
            }
        }
        for (k, v) in obj {
            let p = format!("{path}.{k}");
            if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(child), _) => structural_check(&p, child, v)?,
                (None, Some(ap)) if ap.is_object() => structural_check(&p, ap, v)?,
                _ => return Err(format!("{p}: unknown field")),
            }
        }
    }
    if let (Some(a), Some(items)) = (value.as_array(), schema.get("items")) {
        for (i, v) in a.iter().enumerate() {
            structural_check(&format!("{path}[{i}]"), items, v)?;
        }
    }
    Ok(())
}

#[test]
fn example_is_accepted_by_the_schema() {
    let text = std::fs::read_to_string("examples/integration.yaml").unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let mmis: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "MicrosoftMailIntegration")
        .collect();
    assert_eq!(mmis.len(), 1);
    admit(mmis[0]["spec"].clone()).unwrap();
    // and it deserializes into the operator's own types, which is what the controller reads
    let typed: MicrosoftMailIntegration = serde_json::from_value(mmis[0].clone()).unwrap();
    assert_eq!(typed.spec.targets.len(), 1);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["Secret", "MicrosoftMailIntegration", "Secret", "Deployment"]
    );
    // it uses the path that reaches the mail
    let nb = typed
        .spec
        .nocobase
        .expect("the example writes into NocoBase");
    assert!(nb.mail_settings.is_some_and(|m| m.enabled));
    assert!(nb.public_url.is_some());
}

#[test]
fn minimal_spec_is_accepted_and_defaulted() {
    admit(valid_spec()).unwrap();
    let typed: MicrosoftMailIntegration = serde_json::from_value(json!({
        "apiVersion": "nocobase-mail-operator.dev/v1alpha1", "kind": "MicrosoftMailIntegration",
        "metadata": {"name": "x"}, "spec": valid_spec()}))
    .unwrap();
    assert_eq!(typed.spec.client_secret_ref.key, "client-secret");
    assert_eq!(
        typed.spec.secret_expiry.warn_before,
        ["720h", "168h", "24h"]
    );
    assert_eq!(typed.spec.validation.interval, "6h");
    assert!(typed.spec.secret_expiry.discover_from_graph);
}

fn with(path: &[&str], v: Value) -> Value {
    let mut spec = valid_spec();
    let mut node = &mut spec;
    for (i, k) in path.iter().enumerate() {
        if i + 1 == path.len() {
            node[*k] = v.clone();
        } else {
            if node.get(*k).is_none() {
                node[*k] = json!({});
            }
            node = &mut node[*k];
        }
    }
    spec
}

#[test]
fn admission_refuses_what_is_wrong_on_its_face() {
    let cases = [
        (with(&["tenantId"], json!("common")), "real tenant"),
        (with(&["tenantId"], json!("Organizations")), "real tenant"),
        (
            with(&["tenantId"], json!("not a tenant")),
            "tenantId must be",
        ),
        (with(&["clientId"], json!("7e5f0c1a")), "clientId must be"),
        (
            with(&["authorityHost"], json!("http://login.example.test")),
            "authorityHost",
        ),
        (with(&["graphHost"], json!("ftp://graph")), "graphHost"),
        (
            with(&["secretExpiry", "warnBefore"], json!(["0s"])),
            "positive durations",
        ),
        (
            with(&["secretExpiry", "warnBefore"], json!(["30d"])),
            "positive durations",
        ),
        (
            with(&["secretExpiry", "expiresAt"], json!("next tuesday")),
            "RFC 3339",
        ),
        (
            with(&["validation", "interval"], json!("10s")),
            "at least 1m",
        ),
        (with(&["targets"], json!([{}])), "exactly one"),
        (
            with(
                &["targets"],
                json!([{"deploymentName": "a", "deploymentSelector": {"matchLabels": {"a": "b"}}}]),
            ),
            "exactly one",
        ),
        (
            with(
                &["targets"],
                json!([{"deploymentName": "a", "env": {"clientId": "1BAD"}}]),
            ),
            "environment variable name",
        ),
        (
            with(
                &["targets"],
                json!([{"deploymentName": "a", "env": {"clientId": "X", "clientSecret": "X"}}]),
            ),
            "three different",
        ),
        (with(&["cloud"], json!("AzureGermany")), "not one of"),
        (
            with(
                &["nocobase"],
                json!({"url": "http://nocobase:13000", "apiKeySecretRef": {"name": "k"}, "cleanupTimeout": "0s"}),
            ),
            "cleanupTimeout must be a positive duration",
        ),
        (
            with(
                &["nocobase"],
                json!({"url": "http://nocobase:13000", "apiKeySecretRef": {"name": "k"}, "cleanupTimeout": "25h"}),
            ),
            "cleanupTimeout must be a positive duration",
        ),
        (
            with(
                &["nocobase"],
                json!({"url": "http://nocobase:13000", "apiKeySecretRef": {"name": "k"}, "cleanupTimeout": "ten minutes"}),
            ),
            "cleanupTimeout must be a positive duration",
        ),
    ];
    for (spec, want) in cases {
        let err = admit(spec.clone()).expect_err(&format!("accepted: {spec}"));
        assert!(err.contains(want), "for {spec}: wanted '{want}' in '{err}'");
    }
    admit(with(
        &["targets"],
        json!([{"deploymentSelector": {"matchLabels": {"app": "nocobase"}}}]),
    ))
    .unwrap();
    admit(with(&["authorityHost"], json!("http://127.0.0.1:8080"))).unwrap();
    for ok in ["10m", "30s", "1h30m", "24h"] {
        admit(with(&["nocobase"], json!({"url": "http://nocobase:13000", "apiKeySecretRef": {"name": "k"}, "cleanupTimeout": ok}))).unwrap();
    }
    admit(with(
        &["secretExpiry", "warnBefore"],
        json!(["1h30m", "0.5h"]),
    ))
    .unwrap();
}

/// `spec.nocobase.cleanupTimeout`: CEL and the controller's parser agree.
#[test]
fn cleanup_timeout_cel_and_rust_agree() {
    for t in [
        "10m",
        "30s",
        "1h30m",
        "24h",
        "0.5h",
        "1500ms",
        "0s",
        "0m0s",
        "25h",
        "24h1s",
        "-1m",
        "1d",
        "10",
        "m",
        "ten minutes",
        " 10m",
        "",
    ] {
        let spec = with(
            &["nocobase"],
            json!({"url": "http://nocobase:13000", "apiKeySecretRef": {"name": "k"}, "cleanupTimeout": t}),
        );
        assert_eq!(
            admit(spec).is_ok(),
            nocobase_mail_operator::expiry::parse_cleanup_timeout(t).is_some(),
            "{t:?}"
        );
    }
}

/// The CEL rules and the Rust checks used by `check` and the controller agree.
#[test]
fn cel_and_rust_input_checks_agree() {
    let tenants = [
        "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "contoso.onmicrosoft.com",
        "example.co.uk",
        "common",
        "CONSUMERS",
        "contoso",
        "-bad.com",
        "a..b.com",
        "x.c0m",
        "72f988bf86f141af91ab2d7cd011db47",
        "xn--bcher-kva.example",
    ];
    for t in tenants {
        let cel_ok = admit(with(&["tenantId"], json!(t))).is_ok();
        let rust_ok = input::check(&input::RawCredentials {
            tenant_id: t,
            client_id: "11111111-2222-4333-8444-555555555555",
            client_secret: b"s",
            cloud: Default::default(),
            authority_host: None,
            graph_host: None,
        })
        .is_ok();
        assert_eq!(cel_ok, rust_ok, "tenant {t}: CEL {cel_ok}, Rust {rust_ok}");
    }
    for c in [
        "11111111-2222-4333-8444-555555555555",
        "1111111-2222-4333-8444-5555555555555",
        "zz111111-2222-4333-8444-555555555555",
    ] {
        assert_eq!(
            admit(with(&["clientId"], json!(c))).is_ok(),
            input::is_guid(c),
            "client {c}"
        );
    }
    for e in ["MICROSOFT_CLIENT_ID", "_x", "1X", "A-B", "a b"] {
        let spec = with(
            &["targets"],
            json!([{"deploymentName": "a", "env": {"clientId": e}}]),
        );
        assert_eq!(admit(spec).is_ok(), input::is_env_name(e), "env {e}");
    }
    for h in [
        "https://login.example.test",
        "https://login.example.test/base",
        "http://localhost:9",
        "http://127.0.0.1:80",
        "http://example.test",
        "https://x/?q",
    ] {
        let cel_ok = admit(with(&["authorityHost"], json!(h))).is_ok();
        let rust_ok = input::check_host(Some(h), "d", "authority host").is_ok();
        assert_eq!(cel_ok, rust_ok, "host {h}");
    }
}

/// Names too long for the managed Secret's label, and selectors that select everything, are
/// refused at admission and by the controller's own checks alike.
#[test]
fn cel_and_rust_bound_names_and_refuse_empty_selectors() {
    use nocobase_mail_operator::allow::AllowList;
    let spec: nocobase_mail_operator::api::MicrosoftMailIntegrationSpec =
        serde_json::from_value(valid_spec()).unwrap();
    for len in [1, 62, 63, 64, 200] {
        let name = "a".repeat(len);
        let cel_ok = admit_named(&name, valid_spec()).is_ok();
        let rust_ok =
            nocobase_mail_operator::allow::check_resource(&name, &spec, &AllowList::default())
                .is_ok();
        assert_eq!((cel_ok, rust_ok), (len <= 63, len <= 63), "name of {len}");
        // every name derived from an admitted one is valid: a DNS subdomain of at most 253
        if cel_ok {
            let secret = nocobase_mail_operator::inject::managed_secret_name(&name);
            assert!(secret.len() <= 253);
        }
    }
    for (selector, ok) in [
        (json!({}), false),
        (json!({"matchLabels": {}}), false),
        (json!({"matchLabels": {}, "matchExpressions": []}), false),
        (json!({"matchLabels": {"app": "nocobase"}}), true),
        (
            json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}),
            true,
        ),
    ] {
        let v = with(&["targets"], json!([{"deploymentSelector": selector}]));
        let cel_ok = admit(v.clone()).is_ok();
        let typed: nocobase_mail_operator::api::MicrosoftMailIntegrationSpec =
            serde_json::from_value(v).unwrap();
        let rust =
            nocobase_mail_operator::allow::check_resource("x", &typed, &AllowList::default());
        assert_eq!(cel_ok, ok, "CEL, selector {selector}");
        assert_eq!(rust.is_ok(), ok, "Rust, selector {selector}");
        if !ok {
            assert_eq!(rust.unwrap_err().reason, "EmptySelector");
        }
    }
}

/// spec.rotation: the CEL rules and the pure checks of `rotation::settings` agree.
#[test]
fn rotation_settings_cel_and_rust_agree() {
    use nocobase_mail_operator::api::RotationSettings;
    use nocobase_mail_operator::rotation::settings;
    let cases = [
        (json!({"enabled": true}), true),
        (
            json!({"enabled": true, "rotateBefore": "48h", "lifetime": "72h", "retireAfter": "1m"}),
            true,
        ),
        (json!({"rotateBefore": "0s"}), false),
        (json!({"lifetime": "-5h"}), false),
        (json!({"lifetime": "30d"}), false),
        (json!({"retireAfter": "59s"}), false),
        (json!({"retireAfter": "0s"}), false),
        (json!({"lifetime": "1080h"}), false),
        (json!({"lifetime": "1000h"}), false),
        (json!({"rotateBefore": "1h", "lifetime": "1h0m1s"}), true),
    ];
    for (r, ok) in cases {
        // admission sees the defaults filled in, as the API server applies them first
        let typed: RotationSettings = serde_json::from_value(r.clone()).unwrap();
        let full = serde_json::to_value(&typed).unwrap();
        let cel = admit(with(&["rotation"], full));
        assert_eq!(cel.is_ok(), ok, "CEL for {r}: {cel:?}");
        assert_eq!(settings(&typed).is_ok(), ok, "Rust for {r}");
    }
    let err = admit(with(
        &["rotation"],
        json!({"rotateBefore": "1080h", "lifetime": "100h", "retireAfter": "24h"}),
    ))
    .unwrap_err();
    assert!(err.contains("longer than rotateBefore"), "{err}");
    let typed: RotationSettings = serde_json::from_value(json!({})).unwrap();
    assert_eq!(
        (
            typed.enabled,
            typed.rotate_before.as_str(),
            typed.lifetime.as_str(),
            typed.retire_after.as_str()
        ),
        (false, "1080h", "4320h", "24h")
    );
}

/// `mailSettings.fields.*` take a path into a JSON field (a dot inside a key escaped as
/// `\.`), and the CEL rule and the operator's own check agree on what is a path.
#[test]
fn mail_settings_fields_accept_paths() {
    let with = |id: &str, secret: &str| {
        let mut spec = valid_spec();
        spec["nocobase"] = json!({"url": "http://nocobase:13000", "apiKeySecretRef": {"name": "k"},
            "oauthCallbackPath": "/v/admin/settings/mail/oauth2",
            "mailSettings": {"enabled": true, "createMissingKeys": true,
                "fields": {"clientId": id, "clientSecret": secret}}});
        spec
    };
    for (id, secret, ok) in [
        ("options.clientId", "options.clientSecret", true),
        ("options.outlook.clientId", r"options.smtp\.auth.pass", true),
        ("clientId", "clientSecret", true),
        ("options..clientId", "clientSecret", false),
        ("options.", "clientSecret", false),
        ("1options.x", "clientSecret", false),
        (r"options.a\x", "clientSecret", false),
    ] {
        let cel = admit(with(id, secret));
        let settings: nocobase_mail_operator::api::MailSettings =
            serde_json::from_value(with(id, secret)["nocobase"]["mailSettings"].clone()).unwrap();
        let rust = nocobase_mail_operator::mailsettings::check_settings(&settings);
        assert_eq!(cel.is_ok(), ok, "CEL on {id}, {secret}: {cel:?}");
        assert_eq!(
            rust.is_ok(),
            ok,
            "check_settings on {id}, {secret}: {rust:?}"
        );
    }
    let mut bad_path = with("options.clientId", "options.clientSecret");
    bad_path["nocobase"]["oauthCallbackPath"] = json!("admin?x=1");
    assert!(admit(bad_path).is_err());
}
