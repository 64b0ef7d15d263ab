//! Owner labels: chosen labels of each integration (`team`, `owner`, ...) copied onto its
//! per-integration series (`run --metrics-integration-labels`), so that an alert is routed
//! to whoever owns the secret. Pure: parsed and checked once at start, applied per series.

use std::collections::BTreeMap;

/// At most this many owner labels: each one multiplies nothing (one value per
/// integration), but every label is carried by every per-integration series.
pub const MAX_OWNER_LABELS: usize = 8;
/// A Kubernetes label value is at most 63 characters; anything longer is cut there.
const MAX_VALUE_CHARS: usize = 63;
/// Label names the operator's series or the alerts already use.
const RESERVED: &[&str] = &[
    "namespace",
    "name",
    "reason",
    "outcome",
    "endpoint",
    "status",
    "operation",
    "severity",
    "alertname",
    "job",
    "instance",
    "le",
    "quantile",
];

/// One integration label copied onto the series: the Kubernetes label key, and the
/// Prometheus label name it is published as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerLabel {
    pub key: String,
    pub label: String,
}

/// Parses `KEY` or `KEY=LABEL` entries: KEY a Kubernetes label key, LABEL (default KEY) a
/// Prometheus label name. Refuses what Prometheus or the operator's own labels would clash
/// with, in words.
pub fn parse_owner_labels(entries: &[String]) -> Result<Vec<OwnerLabel>, String> {
    if entries.len() > MAX_OWNER_LABELS {
        return Err(format!(
            "--metrics-integration-labels: at most {MAX_OWNER_LABELS} labels, got {}",
            entries.len()
        ));
    }
    let mut out: Vec<OwnerLabel> = Vec::new();
    for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let (key, label) = entry.split_once('=').unwrap_or((entry, entry));
        check_label_key(key)?;
        check_prometheus_name(key, label)?;
        if out.iter().any(|o| o.label == label) {
            return Err(format!(
                "--metrics-integration-labels: the label {label:?} is given twice"
            ));
        }
        out.push(OwnerLabel {
            key: key.to_owned(),
            label: label.to_owned(),
        });
    }
    Ok(out)
}

/// A Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 characters (alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric).
fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.len() <= 253
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c));
    if name_ok && prefix_ok && !(key.contains('/') && prefix.is_empty()) {
        Ok(())
    } else {
        Err(format!(
            "--metrics-integration-labels: {key:?} is not a Kubernetes label key"
        ))
    }
}

fn check_prometheus_name(key: &str, label: &str) -> Result<(), String> {
    let valid = label.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !label.starts_with("__");
    if !valid {
        return Err(format!(
            "--metrics-integration-labels: {label:?} is not a Prometheus label name \
             (letters, digits and _, not starting with a digit or __); write {key}=NAME"
        ));
    }
    if RESERVED.contains(&label) {
        return Err(format!(
            "--metrics-integration-labels: {label:?} is a label the operator or its alerts \
             already use; write {key}=OTHER_NAME"
        ));
    }
    Ok(())
}

/// The owner label pairs of one integration, in the configured order: every configured
/// label, empty when the integration lacks it (Prometheus treats an empty value as absent,
/// and every series of a family keeps the same label names).
pub fn owner_values(
    config: &[OwnerLabel],
    labels: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    config
        .iter()
        .map(|o| {
            let v = labels.get(&o.key).map(String::as_str).unwrap_or("");
            (o.label.clone(), v.chars().take(MAX_VALUE_CHARS).collect())
        })
        .collect()
}
