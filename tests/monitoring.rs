//! The chart's alert rules as Prometheus evaluates them. The PrometheusRule is rendered by
//! the real `helm`, checked by `promtool check rules`, and unit-tested with
//! `promtool test rules` on series shaped exactly like the operator's own `/metrics`: the
//! metric names and label sets are taken from a scrape of the operator binary running
//! against the fake API and the Microsoft emulator, not retyped. Each alert is shown firing
//! when it should, at the time it should, and silent otherwise.
//!
//! Needs `promtool` (Debian package `prometheus`): from `$PROMTOOL`, else on PATH; the
//! test command installs it. Without it this suite fails (it never skips in CI).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::harness::{self, MMI_AV};
use common::operator_process::{self as process, Credentials, OperatorProcess};
use common::real_kube::eventually;
use common::{CLIENT, TENANT};
use serde_json::{Value, json};

const GOOD: &str = "Gq7Zx2Lp9Vt4Rk8Wm1Nc6Hb3Jd5Fy0Ts2Qe7UaK";
const BAD: &str = "Bv5Nq2Wz8Xk3Rm6Tp1Ly4Hd7Jc9Fg0Ss5Ea2UiQ";
const NS: &str = "mail";
/// What `helm template` names the release's objects (release `mail`).
const JOB: &str = "mail-nocobase-mail-operator";

fn promtool() -> PathBuf {
    std::env::var_os("PROMTOOL")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "promtool".into())
}

fn run_promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs (Debian package prometheus; scripts/test.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The `spec` of the chart's PrometheusRule (`groups`), rendered with `extra` values.
fn rendered_groups(extra: &[&str]) -> Value {
    let mut args = vec![
        "template",
        "mail",
        "charts/nocobase-mail-operator",
        "--namespace",
        "ops",
        "--set",
        "prometheusRule.enabled=true",
    ];
    args.extend_from_slice(extra);
    let out = common::release::helm(None, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rule = text
        .split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .find(|o| o["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    rule["spec"].clone()
}

/// One series of a scrape: its name and labels.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
}

impl Series {
    /// The series in PromQL selector syntax, with `labels` changed.
    fn with(&self, name: &str, labels: &[(&str, &str)]) -> String {
        let mut l = self.labels.clone();
        for (k, v) in labels {
            l.insert((*k).into(), (*v).into());
        }
        let body: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        format!("{name}{{{}}}", body.join(","))
    }
}

/// The names of every metric family the scrape declares (`# TYPE` lines, which the
/// exposition prints even for a family without series yet), and every series.
struct Scrape {
    families: Vec<String>,
    series: Vec<Series>,
    text: String,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let families = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (name, rest) = l.split_once('{')?;
                let (labels, _) = rest.split_once('}')?;
                let labels = labels
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                    .collect();
                Some(Series {
                    name: name.to_owned(),
                    labels,
                })
            })
            .collect();
        Self {
            families,
            series,
            text: text.to_owned(),
        }
    }

    /// The series of `name` for integration `mmi` (panics with the scrape when absent).
    fn of(&self, name: &str, mmi: &str) -> &Series {
        self.series
            .iter()
            .find(|s| s.name == name && s.labels.get("name").map(String::as_str) == Some(mmi))
            .unwrap_or_else(|| panic!("no {name} for {mmi} in the scrape:\n{}", self.text))
    }

    /// A metric family the operator declares; its series carry the same labels as the
    /// other per-integration gauges (`like`).
    fn family_like(&self, family: &str, like: &Series) -> Series {
        assert!(
            self.families.iter().any(|f| f == family),
            "the operator does not export {family}:\n{}",
            self.text
        );
        Series {
            name: family.to_owned(),
            labels: like.labels.clone(),
        }
    }
}

impl Scrape {
    /// Adds the families of `other` this scrape lacks.
    fn with(mut self, other: Scrape) -> Self {
        for f in other.families {
            if !self.families.contains(&f) {
                self.families.push(f);
            }
        }
        self
    }
}

/// The families the binary declares only once it has a series of them (a failing rotation,
/// NocoBase's sync and latency): published by the operator's own metrics code for a status
/// that has them, so their names come from the code the binary runs, not from this file.
fn library_families() -> Scrape {
    use nocobase_mail_operator::api::MicrosoftMailIntegrationStatus;
    use nocobase_mail_operator::telemetry::{Metrics, NocoBaseRequestLabels};
    let m = Metrics::default();
    let cond = |t: &str| {
        json!({"type": t, "status": "True", "reason": "Synced", "message": "",
            "lastTransitionTime": "2027-01-01T00:00:00Z"})
    };
    let status: MicrosoftMailIntegrationStatus = serde_json::from_value(json!({
        "conditions": [cond("Ready"), cond("NocoBaseSynced"), cond("MailSettingsSynced")],
        "rotation": {"phase": "Failed", "failingSince": "2027-01-01T00:00:00Z"}}))
    .unwrap();
    m.set_integration(NS, "accepted", &BTreeMap::new(), &status);
    m.nocobase_requests
        .get_or_create(&NocoBaseRequestLabels {
            operation: "app:refresh".into(),
            status: "200".into(),
        })
        .observe(0.1);
    m.rotation_ended("Succeeded");
    Scrape::parse(&m.encode())
}

fn mmi(name: &str, secret: &str, emu: &str, expires: &str) -> Value {
    json!({"apiVersion": MMI_AV, "kind": "MicrosoftMailIntegration",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"tenantId": TENANT, "clientId": CLIENT,
            "clientSecretRef": {"name": secret},
            "authorityHost": emu, "graphHost": emu,
            "secretExpiry": {"expiresAt": expires, "discoverFromGraph": false}}})
}

fn has_condition(api: &common::fake_api::FakeApi, name: &str) -> bool {
    api.get(MMI_AV, "MicrosoftMailIntegration", NS, name)
        .is_some_and(|o| {
            o["status"]["conditions"]
                .as_array()
                .is_some_and(|c| !c.is_empty())
        })
}

/// Runs the operator binary on one accepted and one rejected integration and scrapes it.
async fn scrape_operator() -> Scrape {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let api = harness::fake_cluster();
    let emu = harness::microsoft(&[GOOD], &[BAD]).await;
    for (name, value) in [("good", GOOD), ("bad", BAD)] {
        api.insert(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS},
            "data": {"client-secret": b64(value)}}));
    }
    api.insert(mmi("accepted", "good", &emu.uri(), "2030-01-01T00:00:00Z"));
    api.insert(mmi("rejected", "bad", &emu.uri(), "2030-01-01T00:00:00Z"));
    let server = process::serve_fake(api.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = process::kubeconfig(dir.path(), &server, &Credentials::default());
    let log = dir.path().join("operator.log");
    let mut args = process::run_args();
    args.extend(process::allow_microsoft(&emu.uri()));
    let mut op = OperatorProcess::start(&kubeconfig, &args, &[], &log);
    op.wait_ready(60).await;
    eventually("both integrations have status", 60, || {
        let ok = has_condition(&api, "accepted") && has_condition(&api, "rejected");
        async move { ok }
    })
    .await;
    let text = op.get("/metrics").await.expect("/metrics answers");
    op.stop();
    Scrape::parse(&text)
}

/// Removes the annotations: their text is checked by `promtool check rules`; the unit
/// tests are about when each alert fires and with which labels.
fn without_annotations(mut groups: Value) -> Value {
    for g in groups["groups"].as_array_mut().unwrap() {
        for r in g["rules"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("annotations");
        }
    }
    groups
}

fn alert(name: &str, at: &str, fired: &[Value]) -> Value {
    json!({"eval_time": at, "alertname": name,
        "exp_alerts": fired.iter().map(|l| json!({"exp_labels": l})).collect::<Vec<_>>()})
}

fn labels(s: &Series, severity: &str) -> Value {
    let mut l = serde_json::Map::new();
    for k in ["namespace", "name"] {
        l.insert(k.into(), json!(s.labels[k]));
    }
    l.insert("severity".into(), json!(severity));
    Value::Object(l)
}

/// The promtool unit tests. Time starts at 0 (the Unix epoch) in promtool; series are
/// sampled every minute (a gap longer than Prometheus's 5-minute lookback would reset `for`).
fn unit_tests(s: &Scrape) -> Value {
    let expiry = s.of("nocobase_mail_secret_expiry_timestamp_seconds", "accepted");
    let valid = s.of("nocobase_mail_credentials_valid", "accepted");
    let invalid = s.of("nocobase_mail_credentials_valid", "rejected");
    let decisive = s.of(
        "nocobase_mail_last_decisive_validation_timestamp_seconds",
        "accepted",
    );
    let failing = s.family_like(
        "nocobase_mail_rotation_failing_since_timestamp_seconds",
        expiry,
    );
    // the expiry lies 10 days after the epoch: warning from day 3 (7 days before), critical from day 10
    let ten_days = 10 * 86400;
    json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m",
             "input_series": [
                {"series": expiry.with(&expiry.name, &[]), "values": format!("{ten_days}x15000")},
                {"series": valid.with(&valid.name, &[]), "values": "1x15000"},
                {"series": invalid.with(&invalid.name, &[]), "values": "0x15000"},
                // Microsoft last answered at 0 and never again: unavailable after 6 h, alert after 15 m more
                {"series": decisive.with(&decisive.name, &[]), "values": "0x15000"},
                // rotation failing since 1 day after the epoch: alert after 24 h more
                {"series": failing.with(&failing.name, &[]), "values": "_x1439 86400x15000"},
                {"series": format!("up{{job=\"{JOB}\",instance=\"10.0.0.1:8080\"}}"), "values": "1x300 _x100"},
             ],
             "alert_rule_test": [
                alert("NocoBaseMailSecretExpiringSoon", "2d23h", &[]),
                alert("NocoBaseMailSecretExpiringSoon", "3d1h", &[labels(expiry, "warning")]),
                alert("NocoBaseMailSecretExpiringSoon", "10d1h", &[]),
                alert("NocoBaseMailSecretExpired", "9d23h", &[]),
                alert("NocoBaseMailSecretExpired", "10d1h", &[labels(expiry, "critical")]),
                alert("NocoBaseMailCredentialsRejected", "10m", &[]),
                alert("NocoBaseMailCredentialsRejected", "20m", &[labels(invalid, "critical")]),
                alert("NocoBaseMailValidationUnavailable", "6h10m", &[]),
                alert("NocoBaseMailValidationUnavailable", "6h30m", &[labels(decisive, "warning")]),
                alert("NocoBaseMailRotationFailing", "1d23h", &[]),
                alert("NocoBaseMailRotationFailing", "2d1h", &[labels(&failing, "warning")]),
                // scraped until 5 h, then gone: the absence alert after its 10 minutes
                alert("NocoBaseMailOperatorAbsent", "4h", &[]),
                alert("NocoBaseMailOperatorAbsent", "5h30m", &[json!({"severity": "critical"})]),
             ]},
        ]
    })
}

fn write_yaml(path: &Path, v: &Value) {
    // JSON is YAML: promtool reads it as is
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_alert_rules_fire_when_they_should_on_the_operators_own_series() {
    let scrape = scrape_operator().await.with(library_families());
    // every family the operator exports is described in the book (docs/src)
    let book: String = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/src"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let undocumented: Vec<&String> = scrape
        .families
        .iter()
        .filter(|f| !book.contains(f.trim_end_matches("_total")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "metrics not in the book: {undocumented:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let groups = rendered_groups(&[]);
    write_yaml(&dir.path().join("full.yaml"), &groups);
    let (ok, out) = run_promtool(&["check", "rules", "full.yaml"], dir.path());
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("6 rules found"), "{out}");
    write_yaml(&dir.path().join("rules.yaml"), &without_annotations(groups));
    write_yaml(&dir.path().join("test.yaml"), &unit_tests(&scrape));
    let (ok, out) = run_promtool(&["test", "rules", "test.yaml"], dir.path());
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn a_wrong_expectation_fails_the_promtool_test() {
    // the harness itself can fail: an alert expected at a time it cannot fire
    let dir = tempfile::tempdir().unwrap();
    write_yaml(
        &dir.path().join("rules.yaml"),
        &without_annotations(rendered_groups(&[])),
    );
    let t = json!({"rule_files": ["rules.yaml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m",
            "input_series": [{"series": "nocobase_mail_credentials_valid{namespace=\"a\",name=\"b\"}", "values": "1x60"}],
            "alert_rule_test": [alert("NocoBaseMailCredentialsRejected", "30m",
                &[json!({"namespace": "a", "name": "b", "severity": "critical"})])]}]});
    write_yaml(&dir.path().join("test.yaml"), &t);
    let (ok, out) = run_promtool(&["test", "rules", "test.yaml"], dir.path());
    assert!(!ok, "promtool accepted a wrong expectation:\n{out}");
}

#[test]
fn extra_alert_labels_and_rule_labels_render_valid_rules() {
    // additionalAlertLabels and labels used to render a stray alert into the metadata
    let groups = rendered_groups(&[
        "--set",
        "prometheusRule.additionalAlertLabels.team=mail",
        "--set",
        "prometheusRule.labels.release=kube-prometheus",
    ]);
    let rules = groups["groups"][0]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 6, "{groups:#}");
    for r in rules {
        assert_eq!(r["labels"]["team"], "mail", "{r:#}");
    }
    let dir = tempfile::tempdir().unwrap();
    write_yaml(&dir.path().join("full.yaml"), &groups);
    let (ok, out) = run_promtool(&["check", "rules", "full.yaml"], dir.path());
    assert!(ok, "promtool check rules:\n{out}");
}

#[test]
fn every_alert_links_its_runbook_in_the_documentation() {
    let groups = rendered_groups(&[]);
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/src/helm.md")).unwrap();
    let base = "https://github.com/nocobase-mail-operator/nocobase-mail-operator/blob/main/docs/src/helm.md#";
    for r in groups["groups"][0]["rules"].as_array().unwrap() {
        let name = r["alert"].as_str().unwrap();
        let url = r["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let anchor = url
            .rsplit_once('#')
            .map(|(_, a)| a)
            .unwrap_or_else(|| panic!("{url}"));
        assert_eq!(anchor, name.to_lowercase(), "{name}: {url}");
        assert!(
            url.starts_with(base),
            "{name}: {url} is not the book's page"
        );
        assert!(
            page.lines()
                .any(|l| l.trim_start_matches('#').trim() == name && l.starts_with("###")),
            "docs/src/helm.md has no heading `### {name}` for the runbook link {url}"
        );
    }
}

/// The dashboard JSON inside the chart's ConfigMap.
fn rendered_dashboard() -> Value {
    let out = common::release::helm(
        None,
        &[
            "template",
            "mail",
            "charts/nocobase-mail-operator",
            "--namespace",
            "ops",
            "--set",
            "grafanaDashboard.enabled=true",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let cm = text
        .split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a ConfigMap labelled grafana_dashboard=1");
    let json = cm["data"]["nocobase-mail-operator.json"].as_str().unwrap();
    serde_json::from_str(json).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard, with Grafana's variables given values.
fn dashboard_exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = vec![];
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*");
            out.push((
                format!("{} {}", p["title"].as_str().unwrap(), t["refId"]),
                expr,
            ));
        }
    }
    out
}

/// The `nocobase_mail_*` names an expression uses that the scrape does not declare
/// (a counter family `x` is sampled as `x_total`, a histogram as `x_bucket`, `_sum`, `_count`).
fn unknown_names(expr: &str, families: &[String]) -> Vec<String> {
    let mut names = vec![];
    let mut rest = expr;
    while let Some(i) = rest.find("nocobase_mail_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
        .into_iter()
        .filter(|n| {
            !families.iter().any(|f| {
                n == f
                    || ["_total", "_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| *n == format!("{f}{s}"))
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_queries_parse_and_name_only_series_the_operator_exports() {
    let scrape = scrape_operator().await.with(library_families());
    let d = rendered_dashboard();
    let exprs = dashboard_exprs(&d);
    assert!(exprs.len() >= 10, "{exprs:?}");
    // the families the issue asks to see, each on some panel
    for needed in [
        "nocobase_mail_ready_reason",
        "nocobase_mail_secret_expiry_timestamp_seconds",
        "nocobase_mail_validations_total",
        "nocobase_mail_microsoft_request_duration_seconds_bucket",
        "nocobase_mail_rotations_total",
        "nocobase_mail_nocobase_synced",
        "nocobase_mail_mail_settings_synced",
        "nocobase_mail_reconcile_errors_total",
    ] {
        assert!(
            exprs.iter().any(|(_, e)| e.contains(needed)),
            "no panel shows {needed}"
        );
    }
    for (panel, e) in &exprs {
        let unknown = unknown_names(e, &scrape.families);
        assert!(
            unknown.is_empty(),
            "{panel}: {unknown:?} not exported by the operator:\n{}",
            scrape.text
        );
    }
    // the scrape's Ready reasons are what the pie chart groups by
    assert!(
        scrape.text.contains(
            "nocobase_mail_ready_reason{namespace=\"mail\",name=\"accepted\",reason=\"Ready\"} 1"
        ),
        "{}",
        scrape.text
    );
    // promtool parses each expression (as a recording rule)
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, e))| json!({"record": format!("dashboard:panel_{i}"), "expr": e}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write_yaml(
        &dir.path().join("dashboard.yaml"),
        &json!({"groups": [{"name": "dashboard", "rules": rules}]}),
    );
    let (ok, out) = run_promtool(&["check", "rules", "dashboard.yaml"], dir.path());
    assert!(
        ok,
        "promtool check rules on the dashboard's queries:\n{out}"
    );
}

#[test]
fn the_name_check_catches_a_series_the_operator_does_not_export() {
    let families = vec![
        "nocobase_mail_ready".to_owned(),
        "nocobase_mail_reconciles".to_owned(),
    ];
    assert!(
        unknown_names(
            "sum(nocobase_mail_ready) + rate(nocobase_mail_reconciles_total[5m])",
            &families
        )
        .is_empty()
    );
    assert_eq!(
        unknown_names("nocobase_mail_readyy", &families),
        ["nocobase_mail_readyy"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_labels_are_copied_onto_the_series_and_follow_a_relabel() {
    use base64::Engine;
    let api = harness::fake_cluster();
    let emu = harness::microsoft(&[GOOD], &[]).await;
    api.insert(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "good", "namespace": NS},
        "data": {"client-secret": base64::engine::general_purpose::STANDARD.encode(GOOD)}}));
    let mut m = mmi("owned", "good", &emu.uri(), "2030-01-01T00:00:00Z");
    m["metadata"]["labels"] = json!({"team": "mail", "example.com/cost-center": "cc-1"});
    api.insert(m);
    let server = process::serve_fake(api.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = process::kubeconfig(dir.path(), &server, &Credentials::default());
    let log = dir.path().join("operator.log");
    let mut args = process::run_args();
    args.extend(process::allow_microsoft(&emu.uri()));
    args.push("--metrics-integration-labels=team,example.com/cost-center=cost_center".into());
    let mut op = OperatorProcess::start(&kubeconfig, &args, &[], &log);
    op.wait_ready(60).await;
    let series = |team: &str| {
        format!(
            "nocobase_mail_credentials_valid{{namespace=\"mail\",name=\"owned\",team=\"{team}\",cost_center=\"cc-1\"}} 1"
        )
    };
    let expected = series("mail");
    eventually("the series carry the owner labels", 60, || {
        let op = &op;
        let expected = expected.clone();
        async move {
            op.get("/metrics")
                .await
                .is_some_and(|m| m.contains(&expected))
        }
    })
    .await;
    // the owner edits the label: the series move, nothing stale stays behind
    let mut obj = api
        .get(MMI_AV, "MicrosoftMailIntegration", NS, "owned")
        .unwrap();
    obj["metadata"]["labels"]["team"] = json!("billing");
    api.update(obj);
    let moved = series("billing");
    eventually("the series follow the new label", 30, || {
        let op = &op;
        let moved = moved.clone();
        async move {
            op.get("/metrics")
                .await
                .is_some_and(|m| m.contains(&moved) && !m.contains("team=\"mail\""))
        }
    })
    .await;
    op.stop();
}

#[test]
fn bad_owner_labels_are_refused_at_start_in_words() {
    for (flag, said) in [
        ("--metrics-integration-labels=name", "already use"),
        (
            "--metrics-integration-labels=example.com/team",
            "not a Prometheus label name",
        ),
        (
            "--metrics-integration-labels=Bad Key",
            "not a Kubernetes label key",
        ),
        (
            "--metrics-integration-labels=a,b,c,d,e,f,g,h,i",
            "at most 8",
        ),
    ] {
        let out = Command::new(process::bin())
            .args(["run", flag])
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert!(err.contains(said), "{flag}: {err}");
    }
}
