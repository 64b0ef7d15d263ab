//! What of an integration the controller keeps in its cache (the reflector's store): the
//! watch stream is trimmed before the store sees an object.

use crate::api::MicrosoftMailIntegration;

/// The integration annotations the operator reads; every other one is dropped from the
/// cache.
pub const ANNOTATIONS_READ: [&str; 2] = [
    crate::api::annotation::ROTATE_REQUESTED_AT,
    crate::api::annotation::RETIRE_APPROVED_AT,
];

/// What of an integration is kept in the cache: no `managedFields`, no labels, and of the
/// annotations only those the operator reads ([`ANNOTATIONS_READ`]). An author may put
/// up to 256 KiB of annotations on each integration (kubectl's last-applied copy alone is
/// as large as the spec); none of it is held in memory.
pub fn strip(m: &mut MicrosoftMailIntegration) {
    m.metadata.managed_fields = None;
    m.metadata.labels = None;
    if let Some(a) = m.metadata.annotations.as_mut() {
        a.retain(|k, _| ANNOTATIONS_READ.contains(&k.as_str()));
        if a.is_empty() {
            m.metadata.annotations = None;
        }
    }
}
