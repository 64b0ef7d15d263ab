//! The documentation book under docs/ (issue 23 item 5): built with mdBook, every internal
//! link and anchor of the built HTML resolves, and everything the code has that a user
//! meets is in it: each reason (read from the sources), flag (from the command line's
//! definition) and chart value (from values.yaml); each metric family of a scrape of the
//! operator binary is checked by tests/monitoring.rs. Nothing here is a hand-kept list.
//!
//! mdBook comes from `MDBOOK` or `PATH` (the test command installs it); without it the
//! build check skips, saying so, unless `BOOK_REQUIRED=1` or `CI` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The book's Markdown, all chapters.
fn book_text() -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(Path::new(ROOT).join("docs/src")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            text.push_str(&std::fs::read_to_string(p).unwrap());
        }
    }
    text
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `"CamelCase"` at the start of `s`: the literal, if it is one.
fn camel_literal(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('"')?;
    let lit = &rest[..rest.find('"')?];
    let upper = lit.chars().filter(char::is_ascii_uppercase).count();
    let ok = lit.chars().all(|c| c.is_ascii_alphanumeric())
        && lit.starts_with(|c: char| c.is_ascii_uppercase())
        && upper >= 2
        && lit.chars().any(|c| c.is_ascii_lowercase());
    ok.then_some(lit)
}

/// Every reason the code can put in a condition: the constants of `mod reason` blocks,
/// `reason: "..."`, `reason = "..."`, `Problem::new("..."` and `("...".into(), message)`.
fn reasons_in_code() -> BTreeSet<String> {
    let mut files = vec![];
    rust_files(&Path::new(ROOT).join("src"), &mut files);
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut in_reason_mod = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with("pub mod reason {") {
                in_reason_mod = true;
            } else if in_reason_mod && line == "}" {
                in_reason_mod = false;
            }
            let mut found: Vec<&str> = vec![];
            if in_reason_mod && let Some((_, v)) = line.split_once("&str = ") {
                found.extend(camel_literal(v));
            }
            for marker in ["reason: ", "reason = ", "Problem::new("] {
                for (i, _) in line.match_indices(marker) {
                    found.extend(camel_literal(&line[i + marker.len()..]));
                }
            }
            if line.ends_with(".into(),") {
                found.extend(camel_literal(line).filter(|l| line == format!("\"{l}\".into(),")));
            }
            out.extend(found.into_iter().map(str::to_owned));
        }
    }
    out
}

/// Every long flag of every subcommand, as `--flag`.
fn flags_in_code() -> BTreeSet<String> {
    let cmd = nocobase_mail_operator::cli::Cli::command();
    let mut out = BTreeSet::new();
    for sub in cmd.get_subcommands() {
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long().filter(|l| *l != "help" && *l != "version") {
                out.insert(format!("--{long}"));
            }
        }
    }
    out
}

fn leaves(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                leaves(x, p, out);
            }
        }
        _ => out.push(path),
    }
}

/// A value is documented by its full path in backticks, or, in a row naming its parent,
/// by its last key (`.key`, as the tables abbreviate siblings).
fn value_documented(book: &str, path: &str) -> bool {
    if book.contains(&format!("`{path}`")) || book.contains(&format!("`{path}.")) {
        return true;
    }
    let Some((parent, key)) = path.rsplit_once('.') else {
        return false;
    };
    book.lines().any(|l| {
        l.contains(parent) && (l.contains(&format!("`.{key}`")) || l.contains(&format!(".{key}`")))
    })
}

#[test]
fn every_reason_flag_and_value_is_in_the_book() {
    let book = book_text();
    let reasons = reasons_in_code();
    assert!(reasons.len() > 50, "the reason scan found only {reasons:?}");
    let missing: Vec<_> = reasons
        .iter()
        .filter(|r| !book.contains(&format!("`{r}`")))
        .collect();
    assert!(missing.is_empty(), "reasons not in the book: {missing:?}");

    let flags = flags_in_code();
    assert!(flags.contains("--allowed-mail-collections"), "{flags:?}");
    let missing: Vec<_> = flags
        .iter()
        .filter(|f| !book.contains(f.as_str()))
        .collect();
    assert!(missing.is_empty(), "flags not in the book: {missing:?}");

    let values =
        std::fs::read_to_string(Path::new(ROOT).join("charts/nocobase-mail-operator/values.yaml"))
            .unwrap();
    let values: Value = serde_saphyr::from_str(&values).unwrap();
    let mut paths = vec![];
    leaves(&values, String::new(), &mut paths);
    let missing: Vec<_> = paths
        .iter()
        .filter(|p| !value_documented(&book, p))
        .collect();
    assert!(
        missing.is_empty(),
        "chart values not in the book: {missing:?}"
    );
}

fn mdbook() -> Option<String> {
    if let Ok(m) = std::env::var("MDBOOK") {
        return Some(m);
    }
    let found = std::process::Command::new("mdbook")
        .arg("--version")
        .output();
    found
        .is_ok_and(|o| o.status.success())
        .then(|| "mdbook".to_owned())
}

/// `attr="value"` occurrences in `html`.
fn attrs<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!("{attr}=\"");
    html.match_indices(&needle)
        .filter_map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

#[test]
fn the_book_builds_and_every_internal_link_resolves() {
    let Some(mdbook) = mdbook() else {
        let required =
            std::env::var_os("BOOK_REQUIRED").is_some() || std::env::var_os("CI").is_some();
        assert!(!required, "mdbook is not installed (BOOK_REQUIRED)");
        eprintln!(
            "SKIPPED: mdbook is not installed (cargo install mdbook --locked --no-default-features)"
        );
        return;
    };
    let out_dir = tempfile::tempdir().unwrap();
    let built = std::process::Command::new(&mdbook)
        .args(["build", "docs", "-d"])
        .arg(out_dir.path())
        .current_dir(ROOT)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "mdbook build failed:\n{said}");
    assert!(!said.contains("WARN") && !said.contains("ERROR"), "{said}");

    let mut pages: BTreeMap<PathBuf, String> = BTreeMap::new();
    for e in std::fs::read_dir(out_dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "html") {
            pages.insert(p.clone(), std::fs::read_to_string(&p).unwrap());
        }
    }
    assert!(pages.len() >= 15, "{:?}", pages.keys());
    let mut broken = vec![];
    for (page, html) in &pages {
        for href in attrs(html, "href") {
            if href.contains("://") || href.starts_with("mailto:") || href.is_empty() {
                continue;
            }
            let (file, anchor) = href.split_once('#').unwrap_or((href, ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            if !target.exists() {
                broken.push(format!("{}: {href} (no such file)", page.display()));
                continue;
            }
            if !anchor.is_empty() {
                let html = pages.get(&target).cloned().unwrap_or_default();
                if !attrs(&html, "id").contains(&anchor) {
                    broken.push(format!("{}: {href} (no such anchor)", page.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
