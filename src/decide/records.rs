//! What status remembers of Microsoft's answers, and the questions asked of it: fold a
//! fresh attempt into the records, did Microsoft accept these credentials, may they be
//! delivered, when to ask again. Pure.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::api::MicrosoftMailIntegrationStatus as Status;
use crate::api::{LastUnavailable, LastValidation, MicrosoftMailIntegrationSpec, Outcome};
use crate::expiry;
use crate::microsoft::Verdict;
use crate::microsoft::classify::MAX_RETRY_AFTER;

/// The records of the last verdict and of the last attempt without one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Records {
    pub last: Option<LastValidation>,
    pub unavailable: Option<LastUnavailable>,
}

impl Records {
    /// The verdict about the credentials with fingerprint `fp`, if any.
    pub fn verdict(&self, fp: Option<&str>) -> Option<&LastValidation> {
        self.last
            .as_ref()
            .filter(|l| fp.is_some() && l.credentials_fingerprint.as_deref() == fp)
    }

    /// The pending attempt without a verdict for these credentials, if any.
    pub fn pending(&self, fp: Option<&str>) -> Option<&LastUnavailable> {
        self.unavailable
            .as_ref()
            .filter(|u| fp.is_some() && u.credentials_fingerprint.as_deref() == fp)
    }
}

/// Folds a fresh attempt about the credentials `fp` into what `previous` remembers: a
/// verdict replaces the last verdict and clears the failure record; an answer without a
/// verdict only counts one more failure and schedules the retry.
pub fn fold_attempt(
    previous: &Status,
    fp: Option<&str>,
    attempt: Option<&Verdict>,
    now: Timestamp,
) -> Records {
    let mut r = Records {
        last: previous.last_validation.clone(),
        unavailable: previous.last_unavailable.clone(),
    };
    let (Some(v), Some(fp)) = (attempt, fp) else {
        return r;
    };
    // an answer shared from another integration's request is recorded at its own time
    let asked = v
        .asked_at
        .and_then(|t| Timestamp::from_second(t.as_second()).ok())
        .map_or(now, |t| t.min(now));
    match v.outcome {
        Outcome::Valid | Outcome::Rejected => {
            r.last = Some(last_validation(v, fp, asked));
            r.unavailable = None;
        }
        Outcome::Unavailable | Outcome::InvalidInput => {
            let failures = r
                .pending(Some(fp))
                .map_or(1, |u| u.failures.saturating_add(1));
            r.unavailable = Some(LastUnavailable {
                time: asked.to_string(),
                reason: v.reason.unwrap_or("Unavailable").into(),
                message: v.message.clone(),
                failures,
                retry_at: expiry::add_saturating(now, retry_delay(failures, v.retry_after))
                    .to_string(),
                credentials_fingerprint: Some(fp.to_owned()),
            });
        }
    }
    r
}

fn last_validation(v: &Verdict, fp: &str, now: Timestamp) -> LastValidation {
    LastValidation {
        time: now.to_string(),
        outcome: v.outcome,
        reason: v.reason.map(str::to_owned),
        aadsts_code: v.aadsts_code,
        message: Some(match &v.hint {
            Some(h) => format!("{} Next step: {h}", v.message),
            None => v.message.clone(),
        }),
        missing_permissions: v.graph.missing_permissions.clone().unwrap_or_default(),
        sign_in_audience: v
            .graph
            .registration
            .as_ref()
            .and_then(|r| r.sign_in_audience.clone()),
        web_redirect_uris: v
            .graph
            .registration
            .as_ref()
            .map(|r| r.web_redirect_uris.clone()),
        graph_expires_at: v.graph.expiry.expires_at.map(|t| t.to_string()),
        expiry_note: v.graph.expiry.note.clone(),
        credentials_fingerprint: Some(fp.to_owned()),
    }
}

/// Did Microsoft accept the credentials with fingerprint `fp`? `Some(Valid)` or
/// `Some(Rejected)` from the last verdict about exactly these credentials; `None` while
/// Microsoft has not judged them. The one answer every caller uses.
pub fn acceptance(records: &Records, fp: &str) -> Option<Outcome> {
    records.verdict(Some(fp)).map(|l| match l.outcome {
        Outcome::Valid => Outcome::Valid,
        _ => Outcome::Rejected,
    })
}

/// Whether the credentials now in the Secret may be delivered (managed Secret, NocoBase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Microsoft accepted them.
    Validated,
    /// Not judged yet, `injectUnverified` opts in, and the operator allows it.
    Unverified,
    /// Rejected, or not judged without the opt-in: never delivered.
    Withheld,
}

/// `unverified_allowed`: the operator honours `spec.injectUnverified`
/// (`--allow-inject-unverified`).
pub fn delivery(
    spec: &MicrosoftMailIntegrationSpec,
    accepted: Option<Outcome>,
    unverified_allowed: bool,
) -> Delivery {
    match accepted {
        Some(Outcome::Valid) => Delivery::Validated,
        None if spec.inject_unverified && unverified_allowed => Delivery::Unverified,
        _ => Delivery::Withheld,
    }
}

/// The validation interval of the spec (admission guarantees it parses; 6h otherwise).
pub fn interval(spec: &MicrosoftMailIntegrationSpec) -> SignedDuration {
    expiry::parse_duration(&spec.validation.interval)
        .filter(|d| *d >= SignedDuration::from_secs(60))
        .unwrap_or(SignedDuration::from_hours(6))
}

pub(crate) fn parse_ts(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

/// When Microsoft should next be asked about the credentials with `fingerprint`:
/// `None` means now (changed credentials, interval elapsed, or a retry is due).
pub fn validation_due(
    spec: &MicrosoftMailIntegrationSpec,
    previous: &Status,
    fingerprint: &str,
    now: Timestamp,
) -> Option<Timestamp> {
    let same = |fp: &Option<String>| fp.as_deref() == Some(fingerprint);
    if let Some(u) = previous
        .last_unavailable
        .as_ref()
        .filter(|u| same(&u.credentials_fingerprint))
        && let Some(at) = parse_ts(&u.retry_at).filter(|at| *at > now)
    {
        return Some(at);
    }
    let last = previous
        .last_validation
        .as_ref()
        .filter(|l| same(&l.credentials_fingerprint))?;
    let due = expiry::add_saturating(parse_ts(&last.time)?, interval(spec));
    (due > now).then_some(due)
}

/// Backoff for retries after an Unavailable answer: 30 s doubling to 10 min, never sooner
/// than Microsoft's Retry-After (itself at most an hour, whatever the header said).
pub fn retry_delay(failures: i32, retry_after: Option<Duration>) -> SignedDuration {
    let exp = 30i64
        .saturating_mul(1i64 << (failures.clamp(1, 6) - 1))
        .min(600);
    let ra = retry_after.map_or(0, |d| d.min(MAX_RETRY_AFTER).as_secs() as i64);
    SignedDuration::from_secs(exp.max(ra))
}

/// The next reconcile: the earliest of the next validation or retry, and the next expiry
/// change; at least 1 s, at most one validation interval.
pub fn requeue_after(
    spec: &MicrosoftMailIntegrationSpec,
    status: &Status,
    fp: Option<&str>,
    next_change: Option<Timestamp>,
    now: Timestamp,
) -> Duration {
    let iv = interval(spec);
    let mut next: Vec<Timestamp> = next_change.into_iter().collect();
    if let Some(fp) = fp {
        next.push(validation_due(spec, status, fp, now).unwrap_or(now));
    }
    let at = next
        .into_iter()
        .min()
        .unwrap_or(expiry::add_saturating(now, iv));
    let secs = now.duration_until(at).as_secs().clamp(1, iv.as_secs());
    Duration::from_secs(secs as u64)
}
