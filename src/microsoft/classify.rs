//! Pure classification of the token endpoint's answers.
//!
//! Microsoft's errors are JSON with `error`, `error_description` (prose starting with
//! `AADSTSnnnn:`), `error_codes`, `trace_id` and `correlation_id`. Decisions are taken on
//! the numeric `error_codes` and the HTTP status, never on the prose, which Microsoft
//! rewords freely.

use std::time::Duration;

use serde::Deserialize;

use super::verdict::{Outcome, Verdict, reason};

/// The JSON error body of the token endpoint. Every field is optional: a truncated or odd
/// body must still be classified, not rejected by the parser.
#[derive(Deserialize, Debug, Default)]
pub struct TokenErrorBody {
    pub error: Option<String>,
    pub error_description: Option<String>,
    #[serde(default)]
    pub error_codes: Vec<i64>,
    pub trace_id: Option<String>,
    pub correlation_id: Option<String>,
}

/// Parses an error body; `None` when it is not a JSON object (an HTML outage page, a
/// truncated body, plain text).
pub fn parse_error_body(body: &[u8]) -> Option<TokenErrorBody> {
    serde_json::from_slice::<TokenErrorBody>(body).ok()
}

/// The longest wait a `Retry-After` may impose. Microsoft's throttling asks for seconds to
/// minutes; a larger value (a broken proxy, a date years ahead) is read as this, so that it
/// can neither overflow a clock nor hold an integration back for years.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` as seconds or an HTTP date, relative to `now`, at most [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let when = httpdate::parse_http_date(v).ok()?;
            when.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Classifies an answer that did not carry a token.
///
/// `secret_is_guid_shaped`: the secret sent has the form of a GUID, which is what the
/// portal's Secret ID column holds and a secret Value never is.
pub fn classify_failure(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    secret_is_guid_shaped: bool,
) -> Verdict {
    let parsed = parse_error_body(body);
    let code = parsed.as_ref().and_then(|b| b.error_codes.first().copied());
    let mut v = match (status, &parsed) {
        (429, _) => throttled(retry_after),
        // A server error is never a verdict on the credentials, whatever code it carries.
        (500..=599, _) => service_unavailable(status),
        (400..=499, Some(b)) if code.is_some() => by_code(code.unwrap_or_default(), status, b, secret_is_guid_shaped, retry_after),
        (400..=499, Some(b)) if b.error.is_some() => rejected_generic(b),
        _ => Verdict::unavailable(
            reason::UNEXPECTED_RESPONSE,
            format!(
                "Microsoft answered HTTP {status} with a body that is not a token response or a Microsoft error ({} bytes).",
                body.len()
            ),
        )
        .with_hint("Check that the authority host points at Microsoft's login endpoint (or your proxy passes it through unchanged); the operator will try again."),
    };
    if let Some(b) = parsed {
        v.aadsts_code = v.aadsts_code.or(code);
        // GUIDs when Microsoft sends them; cut in case something else does
        v.trace_id = b.trace_id.map(|t| crate::http::clip(&t, 64));
        v.correlation_id = b.correlation_id.map(|c| crate::http::clip(&c, 64));
    }
    if v.retry_after.is_none() && v.outcome == Outcome::Unavailable {
        v.retry_after = retry_after;
    }
    v
}

fn throttled(retry_after: Option<Duration>) -> Verdict {
    let wait = retry_after
        .map(|d| format!(" Microsoft asked to wait {}s.", d.as_secs()))
        .unwrap_or_default();
    let mut v = Verdict::unavailable(
        reason::THROTTLED,
        format!("Microsoft is throttling token requests (HTTP 429).{wait} This says nothing about the credentials."),
    )
    .with_hint("Nothing to fix; the operator retries after the requested delay.");
    v.retry_after = retry_after;
    v
}

fn service_unavailable(status: u16) -> Verdict {
    Verdict::unavailable(
        reason::SERVICE_UNAVAILABLE,
        format!("Microsoft's login service answered HTTP {status}: a temporary outage. This says nothing about the credentials."),
    )
    .with_hint("Nothing to fix; the operator retries with backoff. See https://status.cloud.microsoft for incidents.")
}

/// Microsoft's own sentence, without the `Trace ID: ... Timestamp: ...` tail.
pub(crate) fn microsoft_sentence(b: &TokenErrorBody) -> String {
    let d = b
        .error_description
        .as_deref()
        .unwrap_or("")
        .replace("\r\n", "\n");
    let end = ["\nTrace ID:", " Trace ID:"]
        .iter()
        .filter_map(|m| d.find(m))
        .min()
        .unwrap_or(d.len());
    let s = d[..end].trim();
    // quoted into status, Events and logs: a few hundred characters say all Microsoft says
    let max = crate::http::MAX_QUOTED_CHARS;
    if s.is_empty() {
        b.error
            .as_deref()
            .map_or_else(|| "no description".into(), |e| crate::http::clip(e, max))
    } else {
        crate::http::clip(s, max)
    }
}

fn rejected(reason: &'static str, code: i64, message: String, hint: &str) -> Verdict {
    let mut v = Verdict::new(Outcome::Rejected, Some(reason), message).with_hint(hint);
    v.aadsts_code = Some(code);
    v
}

fn rejected_generic(b: &TokenErrorBody) -> Verdict {
    Verdict::new(
        Outcome::Rejected,
        Some(reason::REJECTED_BY_MICROSOFT),
        format!("Microsoft refused the token request: {}", microsoft_sentence(b)),
    )
    .with_hint("Look the AADSTS code up at https://login.microsoftonline.com/error and correct the app registration or the resource.")
}

/// A rejection Microsoft signals with an AADSTS code: (codes, reason, message, next step).
/// `InvalidScope` quotes Microsoft's own sentence and is built in [`by_code`].
type Rejection = (&'static [i64], &'static str, &'static str, &'static str);

/// The rejections with a fixed message, as a table (the README's reasons table mirrors it).
const REJECTIONS: &[Rejection] = &[
    (
        &[7000215],
        reason::INVALID_SECRET,
        "Microsoft rejected the client secret: it is not a current secret of this application.",
        "Copy the Value (not the Secret ID) of a current client secret from App registrations > Certificates & secrets into the Secret, or create a new one.",
    ),
    (
        &[7000222],
        reason::SECRET_EXPIRED,
        "The client secret has expired; Microsoft no longer accepts it and mail has stopped.",
        "Create a new client secret in App registrations > Certificates & secrets, store its Value in the Secret, and set secretExpiry.expiresAt to its new expiry.",
    ),
    (
        &[7000216, 7000218],
        reason::SECRET_MISSING,
        "Microsoft received no client secret with the request.",
        "Store the client secret Value in the referenced Secret key.",
    ),
    (
        &[700016],
        reason::APPLICATION_NOT_FOUND,
        "No application with this client ID exists in this tenant: the client ID is wrong, the app was deleted, or it is registered in another tenant or cloud.",
        "Compare the Application (client) ID and Directory (tenant) ID with the app registration's Overview page, and check the cloud.",
    ),
    (
        &[7000112],
        reason::APPLICATION_DISABLED,
        "The application is disabled in this tenant.",
        "Enable it again: Enterprise applications > the app > Properties > Enabled for users to sign in (and check whether Microsoft disabled it).",
    ),
    (
        &[90002],
        reason::TENANT_NOT_FOUND,
        "Microsoft knows no tenant with this ID or domain in the chosen cloud.",
        "Copy the Directory (tenant) ID from the app registration's Overview page, and check that the cloud (public, US Government, China) is the tenant's.",
    ),
    (
        &[900023],
        reason::INVALID_TENANT,
        "Microsoft does not accept the tenant identifier: it is neither a tenant GUID nor a valid domain.",
        "Use the Directory (tenant) ID GUID or a verified domain of the tenant.",
    ),
    (
        &[53003, 530032],
        reason::BLOCKED_BY_CONDITIONAL_ACCESS,
        "A Conditional Access or security policy of the tenant blocks token issuance for this application.",
        "Ask a tenant administrator to review Conditional Access for workload identities (sign-in logs > service principal sign-ins) and allow this app or the cluster's network location.",
    ),
    (
        &[500011],
        reason::GRAPH_NOT_AVAILABLE_IN_TENANT,
        "Microsoft Graph is not available to applications in this tenant (its service principal was not found).",
        "Check the Graph host matches the cloud; a tenant administrator may need to restore the Microsoft Graph service principal.",
    ),
    (
        &[50049],
        reason::UNKNOWN_AUTHORITY,
        "Microsoft does not know the authority host used.",
        "Check cloud and authorityHost.",
    ),
];

/// AADSTS codes meaning "slow down" and "try later": no verdict about the credentials.
const THROTTLING_CODES: &[i64] = &[50196, 90055];
const OUTAGE_CODES: &[i64] = &[90033, 50033, 90006, 90024, 90090];

fn by_code(
    code: i64,
    status: u16,
    b: &TokenErrorBody,
    guid_secret: bool,
    retry_after: Option<Duration>,
) -> Verdict {
    let mut v = if code == 7000215 && guid_secret {
        rejected(
            reason::SECRET_ID_INSTEAD_OF_VALUE,
            code,
            "Microsoft rejected the client secret, and the value sent has the shape of a Secret ID (a GUID): the Secret ID column was copied instead of the Value.".into(),
            "In Certificates & secrets the Value column is shown only once, right after creation; if it is no longer visible, create a new client secret, copy its Value, and store that in the Secret.",
        )
    } else if let Some(&(_, r, message, hint)) = REJECTIONS.iter().find(|(c, ..)| c.contains(&code))
    {
        rejected(r, code, message.into(), hint)
    } else if code == 1002012 || code == 70011 {
        rejected(
            reason::INVALID_SCOPE,
            code,
            format!(
                "Microsoft refused the requested scope: {}",
                microsoft_sentence(b)
            ),
            "The scope is derived from the Graph host; check graphHost points at Microsoft Graph for the tenant's cloud.",
        )
    } else if THROTTLING_CODES.contains(&code) {
        throttled(retry_after)
    } else if OUTAGE_CODES.contains(&code) {
        service_unavailable(status)
    } else {
        rejected_generic(b)
    };
    v.aadsts_code = Some(code);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("60", now), Some(Duration::from_secs(60)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn unknown_code_is_a_rejection_with_microsofts_sentence() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS123456: Something new.\r\nTrace ID: x\r\nCorrelation ID: y\r\nTimestamp: z","error_codes":[123456]}"#;
        let v = classify_failure(400, None, body, false);
        assert_eq!(v.outcome, Outcome::Rejected);
        assert_eq!(v.reason, Some(reason::REJECTED_BY_MICROSOFT));
        assert_eq!(v.aadsts_code, Some(123456));
        assert!(
            v.message.ends_with("AADSTS123456: Something new."),
            "{}",
            v.message
        );
    }

    #[test]
    fn transient_code_in_a_4xx_is_not_a_rejection() {
        let body = br#"{"error":"temporarily_unavailable","error_codes":[90033]}"#;
        assert_eq!(
            classify_failure(400, None, body, false).outcome,
            Outcome::Unavailable
        );
    }

    #[test]
    fn non_json_4xx_is_unexpected() {
        let v = classify_failure(404, None, b"<html>not found</html>", false);
        assert_eq!(v.reason, Some(reason::UNEXPECTED_RESPONSE));
    }
}
