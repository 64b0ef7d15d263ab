//! Expiry policy (pure): from the stated or discovered expiry, the warning windows and the
//! clock to one assessment, in the manner of cert-manager's renewal checks.

use jiff::{SignedDuration, Timestamp};

use crate::api::ExpirySource;

/// A warning window from `spec.secretExpiry.warnBefore`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// As written in the spec, e.g. `720h`; the key recorded in status once announced.
    pub spec: String,
    pub before: SignedDuration,
}

impl Window {
    /// A CamelCase reason naming the window: `ExpiresWithin30Days`, `ExpiresWithin12Hours`.
    pub fn reason(&self) -> String {
        format!("ExpiresWithin{}", self.label().replace(' ', ""))
    }

    /// `30 Days`, `1 Day`, `12 Hours`, `90 Minutes`, for messages and reasons.
    pub fn label(&self) -> String {
        let secs = self.before.as_secs();
        let (n, unit) = if secs % 86_400 == 0 {
            (secs / 86_400, "Day")
        } else if secs % 3_600 == 0 {
            (secs / 3_600, "Hour")
        } else if secs % 60 == 0 {
            (secs / 60, "Minute")
        } else {
            (secs, "Second")
        };
        format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
    }
}

/// `t + d`, or the end (start) of time instead of an overflow: durations from the spec,
/// status and Microsoft's answers are outside input, and must never panic a reconcile.
pub fn add_saturating(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// Parses a Kubernetes (Go-style) duration such as `720h`, `1h30m`, `0.5h`.
pub fn parse_duration(s: &str) -> Option<SignedDuration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_end..];
    }
    SignedDuration::try_from_secs_f64(total).ok()
}

/// The Rust twin of `spec.nocobase.cleanupTimeout`'s CEL rule: a Go-style duration,
/// positive, at most 24h.
pub fn parse_cleanup_timeout(s: &str) -> Option<SignedDuration> {
    if s != s.trim() {
        return None;
    }
    parse_duration(s).filter(|d| d.is_positive() && *d <= SignedDuration::from_hours(24))
}

/// `cleanupTimeout` as a duration: the spec's when admission would accept it, else the
/// default 10m (an object admitted before the field had its rule).
pub fn cleanup_timeout(s: &str) -> SignedDuration {
    parse_cleanup_timeout(s).unwrap_or(SignedDuration::from_mins(10))
}

/// Windows sorted widest first; invalid or non-positive entries are skipped (admission
/// refuses them, so they only reach here through an old CRD).
pub fn windows(spec: &[String]) -> Vec<Window> {
    let mut w: Vec<Window> = spec
        .iter()
        .filter_map(|s| {
            let before = parse_duration(s)?;
            before.is_positive().then(|| Window {
                spec: s.clone(),
                before,
            })
        })
        .collect();
    w.sort_by_key(|w| std::cmp::Reverse(w.before));
    w.dedup_by(|a, b| a.before == b.before);
    w
}

/// Where the secret stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    /// No date is known.
    Unknown,
    /// Outside every window.
    Fine,
    /// Inside this window (the narrowest reached); the secret still works.
    Within(Window),
    /// The expiry instant has passed.
    Expired,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub expires_at: Option<Timestamp>,
    pub source: Option<ExpirySource>,
    pub stage: Stage,
    /// Every window already reached, widest first.
    pub reached: Vec<Window>,
    /// When the stage changes next (a window opens or the secret expires).
    pub next_change: Option<Timestamp>,
}

/// `spec` wins over `graph` when both exist.
pub fn assess(
    spec: Option<Timestamp>,
    graph: Option<Timestamp>,
    windows: &[Window],
    now: Timestamp,
) -> Assessment {
    let (expires_at, source) = match (spec, graph) {
        (Some(t), _) => (Some(t), Some(ExpirySource::Spec)),
        (None, Some(t)) => (Some(t), Some(ExpirySource::Graph)),
        (None, None) => (None, None),
    };
    let Some(at) = expires_at else {
        return Assessment {
            expires_at,
            source,
            stage: Stage::Unknown,
            reached: vec![],
            next_change: None,
        };
    };
    if now >= at {
        return Assessment {
            expires_at,
            source,
            stage: Stage::Expired,
            reached: windows.to_vec(),
            next_change: None,
        };
    }
    let left = now.duration_until(at);
    let reached: Vec<Window> = windows
        .iter()
        .filter(|w| left <= w.before)
        .cloned()
        .collect();
    // the next window to open is the widest one not yet reached; else the expiry itself
    let next_change = windows
        .iter()
        .filter(|w| left > w.before)
        .map(|w| at.checked_sub(w.before).unwrap_or(Timestamp::MIN))
        .min()
        .or(Some(at));
    let stage = match reached.last() {
        Some(w) => Stage::Within(w.clone()),
        None => Stage::Fine,
    };
    Assessment {
        expires_at,
        source,
        stage,
        reached,
        next_change,
    }
}

/// `in 6 days, 4 hours` style, for messages.
pub fn human_until(now: Timestamp, at: Timestamp) -> String {
    let secs = now.duration_until(at).as_secs();
    if secs <= 0 {
        return "now".into();
    }
    let (d, h, m) = (secs / 86_400, (secs % 86_400) / 3_600, (secs % 3_600) / 60);
    let plural = |n: i64, u: &str| format!("{n} {u}{}", if n == 1 { "" } else { "s" });
    match (d, h) {
        (0, 0) => format!("in {}", plural(m.max(1), "minute")),
        (0, _) => format!("in {}", plural(h, "hour")),
        (_, 0) => format!("in {}", plural(d, "day")),
        _ => format!("in {}, {}", plural(d, "day"), plural(h, "hour")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn default_windows() -> Vec<Window> {
        windows(&["720h".into(), "168h".into(), "24h".into()])
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("720h"),
            Some(SignedDuration::from_hours(720))
        );
        assert_eq!(parse_duration("1h30m"), Some(SignedDuration::from_mins(90)));
        assert_eq!(parse_duration("0.5h"), Some(SignedDuration::from_mins(30)));
        assert_eq!(parse_duration("30d"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("h"), None);
    }

    #[test]
    fn window_names() {
        let w = default_windows();
        assert_eq!(
            w.iter().map(Window::reason).collect::<Vec<_>>(),
            [
                "ExpiresWithin30Days",
                "ExpiresWithin7Days",
                "ExpiresWithin1Day"
            ]
        );
        assert_eq!(
            windows(&["90m".into()])[0].reason(),
            "ExpiresWithin90Minutes"
        );
    }

    #[test]
    fn each_stage_and_next_change() {
        let at = ts("2027-05-31T00:00:00Z");
        let w = default_windows();
        let a = assess(Some(at), None, &w, ts("2027-01-01T00:00:00Z"));
        assert_eq!(a.stage, Stage::Fine);
        assert_eq!(a.next_change, Some(ts("2027-05-01T00:00:00Z")));
        let a = assess(Some(at), None, &w, ts("2027-05-01T00:00:00Z"));
        assert_eq!(
            a.stage,
            Stage::Within(w[0].clone()),
            "the window opens at its boundary"
        );
        assert_eq!(a.next_change, Some(ts("2027-05-24T00:00:00Z")));
        let a = assess(Some(at), None, &w, ts("2027-05-30T12:00:00Z"));
        assert_eq!(a.stage, Stage::Within(w[2].clone()));
        assert_eq!(a.reached.len(), 3);
        assert_eq!(a.next_change, Some(at));
        let a = assess(Some(at), None, &w, at);
        assert_eq!((a.stage, a.next_change), (Stage::Expired, None));
    }

    #[test]
    fn spec_wins_and_unknown_is_not_guessed() {
        let w = default_windows();
        let a = assess(
            Some(ts("2027-01-01T00:00:00Z")),
            Some(ts("2028-01-01T00:00:00Z")),
            &w,
            ts("2026-01-01T00:00:00Z"),
        );
        assert_eq!(a.source, Some(ExpirySource::Spec));
        let a = assess(
            None,
            Some(ts("2028-01-01T00:00:00Z")),
            &w,
            ts("2026-01-01T00:00:00Z"),
        );
        assert_eq!(a.source, Some(ExpirySource::Graph));
        let a = assess(None, None, &w, ts("2026-01-01T00:00:00Z"));
        assert_eq!(
            (a.stage, a.expires_at, a.next_change),
            (Stage::Unknown, None, None)
        );
    }

    #[test]
    fn human() {
        let now = ts("2027-01-01T00:00:00Z");
        assert_eq!(
            human_until(now, ts("2027-01-07T04:00:00Z")),
            "in 6 days, 4 hours"
        );
        assert_eq!(human_until(now, ts("2027-01-01T00:00:30Z")), "in 1 minute");
    }
}
