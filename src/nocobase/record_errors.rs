//! How NocoBase's answers to the record and API-doc actions read (pure): the same HTTP
//! status means something else there than for the variables (a 404 is a missing
//! collection, a 400 a refused write or an unknown filter field).

/// Reasons of the `MailSettingsSynced` condition that the client itself can tell.
pub mod reason {
    /// The collection does not exist (`<name>:list` answers 404), or the API
    /// documentation knows no such collection.
    pub const NOT_FOUND: &str = "MailSettingsNotFound";
    /// NocoBase refused the write (HTTP 400: a field's validation).
    pub const REFUSED: &str = "MailSettingsRefused";
    /// A field named in the spec is not a field of the collection (also NocoBase's HTTP
    /// 400 "Invalid SQL column or table reference" to a filter on an unknown field).
    pub const FIELD_UNKNOWN: &str = "MailSettingsFieldUnknown";
    /// Internal: the API-doc plugin could not describe the collection; the caller falls
    /// back to a record's keys.
    pub const API_DOC_UNAVAILABLE: &str = "ApiDocUnavailable";
}

pub(super) fn not_found(base: &str, collection: &str) -> String {
    format!(
        "NocoBase at {base} has no collection {collection} (its list action answers HTTP 404): the email manager is not enabled in this application, or spec.nocobase.mailSettings.collection is wrong"
    )
}

/// Answers of the record and API-doc actions that mean something else than for the
/// variables; `None` leaves the answer to the common classification.
pub(super) fn classify(
    base: &str,
    action: &str,
    status: u16,
    gateway_code: Option<&str>,
    names: &[&str],
) -> Option<(&'static str, String)> {
    let collection = names.first().copied().unwrap_or("the collection");
    let records = matches!(action, "records:list" | "records:update");
    match (action, status) {
        (_, 404) if gateway_code == Some("APP_NOT_FOUND") => None,
        ("swagger:get", 404) => Some((
            reason::API_DOC_UNAVAILABLE,
            format!(
                "NocoBase at {base} has no API documentation (the built-in API documentation plugin, @nocobase/plugin-api-doc, is not enabled)"
            ),
        )),
        ("swagger:get", 500 | 501 | 502 | 504..=599) => Some((
            reason::API_DOC_UNAVAILABLE,
            format!("NocoBase at {base} answered swagger:get with HTTP {status}"),
        )),
        (_, 404) if records => Some((reason::NOT_FOUND, not_found(base, collection))),
        (_, 403) if records => Some((
            super::reason::API_KEY_REJECTED,
            format!(
                "NocoBase at {base} refused access to the collection {collection} (HTTP 403): the API key's role may not read or update it. Use an API key with the root role"
            ),
        )),
        ("records:list", 400) => Some((
            reason::FIELD_UNKNOWN,
            format!(
                "NocoBase at {base} refused to filter the collection by spec.nocobase.mailSettings.match (HTTP 400): a match field is not a field of the collection"
            ),
        )),
        ("records:update", 400) => Some((
            reason::REFUSED,
            format!(
                "NocoBase at {base} refused the write to the collection {collection} with HTTP 400 (a field's validation); the NocoBase server log has the details. Check spec.nocobase.mailSettings.fields"
            ),
        )),
        _ => None,
    }
}
