//! Field paths of `spec.nocobase.mailSettings.fields`: a top-level field of the record,
//! optionally followed by keys inside a JSON field (`options.clientSecret`,
//! `options.outlook.clientId`). A key holding a dot is written with `\.`, a backslash with
//! `\\` (`options.smtp\.host` is the key `smtp.host` of `options`).
//!
//! A path is never sent to NocoBase as a key: NocoBase expands a dotted key of an update
//! body and replaces the whole JSON field with it (seen on 2.2.15), so the operator reads
//! the JSON, changes its own keys and writes the whole field back ([`set`]).

use std::fmt;

use serde_json::Value;

/// The CEL/RE2 pattern of a path: a NocoBase field name, then `.`-separated keys in
/// which `.` and `\` are escaped with `\`.
pub const PATH_RE: &str = r"^[A-Za-z_][A-Za-z0-9_]*(\.([^.\\]|\\[.\\])+)*$";

/// At most this many keys below the top-level field.
pub const MAX_DEPTH: usize = 8;

/// A parsed field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldPath {
    /// The record's field (a NocoBase field name).
    pub top: String,
    /// Keys inside the JSON value of `top` (empty: the field itself).
    pub keys: Vec<String>,
}

impl FieldPath {
    /// Parses `s`, or says why it is not a path.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = vec![String::new()];
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('.' | '\\')) => parts.last_mut().expect("one part").push(e),
                    _ => return Err(format!("{s:?}: a \\ must be followed by . or \\")),
                },
                '.' => parts.push(String::new()),
                c => parts.last_mut().expect("one part").push(c),
            }
        }
        let top = parts.remove(0);
        if !super::valid_name(&top) {
            return Err(format!(
                "{s:?}: the field {top:?} is not a NocoBase field name (letters, digits and _, at most 63, not starting with a digit)"
            ));
        }
        if parts.iter().any(String::is_empty) {
            return Err(format!(
                "{s:?}: a key is empty (write a dot inside a key as \\.)"
            ));
        }
        if parts.len() > MAX_DEPTH {
            return Err(format!("{s:?}: more than {MAX_DEPTH} keys"));
        }
        Ok(Self { top, keys: parts })
    }

    /// A field of its own (no key inside a JSON value).
    pub fn is_flat(&self) -> bool {
        self.keys.is_empty()
    }

    /// The same keys inside another top-level field.
    pub fn inside(&self, top: &str) -> Self {
        let mut keys = vec![self.top.clone()];
        keys.extend(self.keys.iter().cloned());
        Self {
            top: top.to_owned(),
            keys,
        }
    }

    /// The keys below the field, written as in the spec (`outlook.clientId`).
    pub fn key_text(&self) -> String {
        self.keys
            .iter()
            .map(|k| escape(k))
            .collect::<Vec<_>>()
            .join(".")
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.top)?;
        for k in &self.keys {
            write!(f, ".{}", escape(k))?;
        }
        Ok(())
    }
}

fn escape(k: &str) -> String {
    k.replace('\\', "\\\\").replace('.', "\\.")
}

/// Where a path leads inside a JSON value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The key exists and holds this value.
    Found(&'a Value),
    /// `keys[..depth]` exist and are objects; `keys[depth]` is not among `present`.
    Missing { depth: usize, present: Vec<String> },
    /// `keys[..depth]` lead to something that is not an object.
    NotObject { depth: usize },
}

/// Follows `keys` inside `v`.
pub fn get<'a>(v: &'a Value, keys: &[String]) -> Lookup<'a> {
    let mut at = v;
    for (depth, k) in keys.iter().enumerate() {
        let Value::Object(o) = at else {
            return Lookup::NotObject { depth };
        };
        match o.get(k) {
            Some(next) => at = next,
            None => {
                return Lookup::Missing {
                    depth,
                    present: o.keys().cloned().collect(),
                };
            }
        }
    }
    Lookup::Found(at)
}

/// Puts `value` at `keys` inside `v`, creating missing objects on the way when `create`;
/// every other key of `v` stays as it was. Errors when a key is missing (and not
/// `create`) or a step is not an object.
pub fn set(v: &mut Value, keys: &[String], value: Value, create: bool) -> Result<(), usize> {
    let Some((last, ancestors)) = keys.split_last() else {
        *v = value;
        return Ok(());
    };
    let mut at = v;
    for (depth, k) in ancestors.iter().enumerate() {
        let Value::Object(o) = at else {
            return Err(depth);
        };
        if !o.contains_key(k) && !create {
            return Err(depth);
        }
        at = o
            .entry(k.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    let Value::Object(o) = at else {
        return Err(ancestors.len());
    };
    if !o.contains_key(last) && !create {
        return Err(ancestors.len());
    }
    o.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_parse_with_escaped_dots_and_print_back() {
        let p = FieldPath::parse("options.outlook.clientId").unwrap();
        assert_eq!(p.top, "options");
        assert_eq!(p.keys, ["outlook", "clientId"]);
        let e = FieldPath::parse(r"options.smtp\.host.a\\b").unwrap();
        assert_eq!(e.keys, ["smtp.host", r"a\b"]);
        assert_eq!(e.to_string(), r"options.smtp\.host.a\\b");
        assert!(FieldPath::parse("clientId").unwrap().is_flat());
        for bad in ["", "1a", "a..b", "a.", "a-b.c", r"a.b\x", &"a.b".repeat(10)] {
            assert!(FieldPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_changes_only_its_key() {
        let mut v = json!({"gmail": {"clientId": "g"}, "flag": true, "outlook": {"clientId": ""}});
        let k = |s: &str| s.split('.').map(str::to_owned).collect::<Vec<_>>();
        set(&mut v, &k("outlook.clientId"), json!("c"), false).unwrap();
        assert_eq!(
            v,
            json!({"gmail": {"clientId": "g"}, "flag": true, "outlook": {"clientId": "c"}})
        );
        assert_eq!(set(&mut v, &k("outlook.secret"), json!("s"), false), Err(1));
        assert_eq!(set(&mut v, &k("flag.x"), json!("s"), true), Err(1));
        set(&mut v, &k("new.secret"), json!("s"), true).unwrap();
        assert_eq!(get(&v, &k("new.secret")), Lookup::Found(&json!("s")));
        assert!(matches!(
            get(&v, &k("gmail.x")),
            Lookup::Missing { depth: 1, .. }
        ));
        assert_eq!(get(&v, &k("flag.x")), Lookup::NotObject { depth: 1 });
    }
}
