//! What of an integration the controller keeps in its cache (the reflector's store): the
//! watch stream is trimmed before the store sees an object.

use std::sync::OnceLock;

use crate::api::MicrosoftMailIntegration;

/// The integration labels copied onto its metrics (`--metrics-integration-labels`), set once
/// at start; every other label is dropped from the cache.
pub static LABELS_READ: OnceLock<Vec<String>> = OnceLock::new();

/// The integration annotations the operator reads; every other one is dropped from the
/// cache.
pub const ANNOTATIONS_READ: [&str; 2] = [
    crate::api::annotation::ROTATE_REQUESTED_AT,
    crate::api::annotation::RETIRE_APPROVED_AT,
];

/// What of an integration is kept in the cache: no `managedFields`, of the labels only the
/// owner labels ([`LABELS_READ`], at most 8, values at most 63 characters), and of the
/// annotations only those the operator reads ([`ANNOTATIONS_READ`]). An author may put
/// up to 256 KiB of annotations on each integration (kubectl's last-applied copy alone is
/// as large as the spec); none of it is held in memory.
pub fn strip(m: &mut MicrosoftMailIntegration) {
    m.metadata.managed_fields = None;
    let keep = LABELS_READ.get().map(Vec::as_slice).unwrap_or(&[]);
    if let Some(l) = m.metadata.labels.as_mut() {
        l.retain(|k, _| keep.contains(k));
        if l.is_empty() {
            m.metadata.labels = None;
        }
    }
    if let Some(a) = m.metadata.annotations.as_mut() {
        a.retain(|k, _| ANNOTATIONS_READ.contains(&k.as_str()));
        if a.is_empty() {
            m.metadata.annotations = None;
        }
    }
}
