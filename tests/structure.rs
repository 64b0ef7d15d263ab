//! The shape rules of `src/` (issue 12), checked on the source text so they hold as the code
//! grows: no function over 80 lines, no file over 500 lines (the API types of `src/api.rs`
//! aside), and no import cycle between modules.
//!
//! Functions are found as rustfmt lays them out: a `fn` line, and its body ending at the
//! first `}` line at the same indentation. Module references are `crate::a::b` and
//! `super::a` paths (grouped `use x::{a, b}` included). A module may use its own
//! submodules (it composes them) and they may use it; any other cycle is reported.
//!
//! And one rule of `tests/`: the in-process fake API server stays small (issue 20 item 5).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FN_LINES: usize = 80;
const MAX_FILE_LINES: usize = 500;
/// `tests/common/fake_api.rs` is for fast unit-level runs and injected faults; what only a
/// real API server decides (field ownership, conflicts between managers, schema list
/// merges, garbage collection) is tested on the real control plane, not grown into it.
const MAX_FAKE_API_LINES: usize = 1_200;

fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push((p.clone(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let mut out = vec![];
    walk(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut out,
    );
    out.sort();
    out
}

/// `src/a/b.rs` -> `a::b`, `src/a/mod.rs` -> `a`; `lib.rs` and `main.rs` are the root.
fn module_of(path: &Path) -> String {
    let rel = path
        .strip_prefix(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
        .unwrap();
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
    {
        parts.pop();
    }
    parts.join("::")
}

/// (name, first line, length) of every function with a body.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = vec![];
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let decl = [
            "pub ",
            "pub(crate) ",
            "pub(super) ",
            "async ",
            "const ",
            "unsafe ",
        ]
        .iter()
        .fold(t, |acc, p| acc.strip_prefix(p).unwrap_or(acc));
        let decl = decl.strip_prefix("async ").unwrap_or(decl);
        let Some(rest) = decl.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let indent = &line[..line.len() - t.len()];
        // the signature ends at a line ending with `{` (a body) or `;` (none)
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';') || (j == i && l.ends_with('}'))
        }) else {
            continue;
        };
        let l = lines[open].trim_end();
        if l.ends_with(';') {
            continue;
        }
        if l.ends_with('}') {
            out.push((name, i + 1, 1));
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&j| lines[j].trim_end() == close) {
            out.push((name, i + 1, end - i + 1));
        }
    }
    out
}

#[test]
fn no_function_in_src_is_over_80_lines() {
    let mut long = vec![];
    for (path, text) in sources() {
        for (name, line, len) in functions(&text) {
            if len > MAX_FN_LINES {
                long.push(format!("{}:{line} {name} ({len} lines)", path.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn no_file_in_src_is_over_500_lines_but_the_api_types() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter(|(p, _)| !p.ends_with("src/api.rs"))
        .filter(|(_, t)| t.lines().count() > MAX_FILE_LINES)
        .map(|(p, t)| format!("{} ({} lines)", p.display(), t.lines().count()))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// The modules `text` (module `me`) refers to, resolved against the known modules.
fn references(me: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let parent = me.rsplit_once("::").map_or("", |(p, _)| p).to_owned();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect::<String>()
            .trim_end_matches(':')
            .to_owned()
    };
    for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
        for (idx, _) in text.match_indices(prefix) {
            if text[..idx].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue; // part of a longer path (`crate::a::super::`, `foo_crate::`)
            }
            let rest = &text[idx + prefix.len()..];
            let mut paths = vec![];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = &group[..group.find('}').unwrap_or(group.len())];
                paths.extend(inner.split(',').map(|p| ident(p.trim())));
            } else {
                let head = ident(rest);
                if let Some(group) = rest[head.len()..].strip_prefix("::{") {
                    let inner = &group[..group.find('}').unwrap_or(group.len())];
                    paths.extend(
                        inner
                            .split(',')
                            .map(|p| format!("{head}::{}", ident(p.trim()))),
                    );
                }
                paths.push(head);
            }
            for p in paths {
                let full = if base.is_empty() {
                    p
                } else {
                    format!("{base}::{p}")
                };
                // the longest known module that prefixes the path
                let mut segs: Vec<&str> = full.split("::").collect();
                while !segs.is_empty() {
                    let m = segs.join("::");
                    if known.contains(&m) {
                        out.insert(m);
                        break;
                    }
                    segs.pop();
                }
            }
        }
    }
    out
}

fn is_within(child: &str, parent: &str) -> bool {
    parent.is_empty() || child.starts_with(&format!("{parent}::"))
}

#[test]
fn no_import_cycles_between_modules() {
    let files = sources();
    let known: BTreeSet<String> = files.iter().map(|(p, _)| module_of(p)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in &files {
        let me = module_of(path);
        if me.is_empty() {
            continue; // lib.rs and main.rs declare and run, they are not depended on
        }
        // comments name modules without depending on them
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let refs = references(&me, &code, &known)
            .into_iter()
            .filter(|m| m != &me && !m.is_empty())
            // a module composes its own submodules, which may use what it defines
            .filter(|m| !is_within(m, &me) && !is_within(&me, m))
            .collect();
        edges.insert(me, refs);
    }
    // depth-first search for a back edge
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(at) = stack.iter().position(|s| s == m) {
            cycles.push(format!("{} -> {m}", stack[at..].join(" -> ")));
            return;
        }
        if !done.insert(m.to_owned()) {
            return;
        }
        stack.push(m.to_owned());
        for n in edges.get(m).into_iter().flatten() {
            visit(n, edges, stack, done, cycles);
        }
        stack.pop();
    }
    let mut cycles = vec![];
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        visit(m, &edges, &mut vec![], &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checks_see_what_they_check() {
    let text = "fn short() {}\n\nfn two() {\n    body();\n}\n\ntrait T {\n    fn sig(&self);\n}\n";
    assert_eq!(
        functions(text),
        [("short".into(), 1, 1), ("two".into(), 3, 3)]
    );
    let known: BTreeSet<String> = ["a", "b", "b::c"].iter().map(|s| s.to_string()).collect();
    let refs = references(
        "b::c",
        "use super::a;\nuse crate::{a::X, b::c::Y};\n",
        &known,
    );
    let want = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(refs, want(&["a", "b", "b::c"]));
    let refs = references("a", "use crate::b::{c::Z, W};", &known);
    assert_eq!(refs, want(&["b", "b::c"]));
}

#[test]
fn the_fake_api_server_stays_under_its_allowance() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/fake_api.rs");
    let lines = std::fs::read_to_string(path).unwrap().lines().count();
    assert!(
        lines <= MAX_FAKE_API_LINES,
        "tests/common/fake_api.rs has {lines} lines (at most {MAX_FAKE_API_LINES}): test what \
         only a real API server decides on the real control plane (tests/kube_real.rs)"
    );
}
