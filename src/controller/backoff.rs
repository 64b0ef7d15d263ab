//! Per-object backoff after a failed reconcile, as client-go's rate-limited workqueue does
//! for its controllers: a brief API server hiccup costs each integration about a second,
//! and an integration that keeps failing waits longer and longer (capped), without holding
//! back the others. A successful reconcile forgets the object's failures.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The first retry after a failure waits up to this long.
pub const ERROR_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// No retry waits longer than this.
pub const ERROR_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// The wait before retry number `failures` (1 for the first): the base doubled per earlier
/// failure, capped, times `jitter` in [0.5, 1] so that integrations failing together do not
/// retry together.
pub fn error_delay(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let exp = ERROR_BACKOFF_BASE
        .saturating_mul(1 << doublings)
        .min(ERROR_BACKOFF_CAP);
    exp.mul_f64(jitter.clamp(0.5, 1.0))
}

/// Consecutive failures per object (`namespace/name`).
#[derive(Default)]
pub struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    /// Counts one more failure of `key` and returns how long to wait before retrying it.
    pub fn next(&self, key: &str) -> Duration {
        let n = {
            let mut f = self.failures.lock().expect("backoff lock");
            let n = f.entry(key.to_owned()).or_default();
            *n = n.saturating_add(1);
            *n
        };
        error_delay(n, rand::random_range(0.5..=1.0))
    }

    /// Forgets the failures of `key` (after a successful reconcile, or its deletion).
    pub fn reset(&self, key: &str) {
        self.failures.lock().expect("backoff lock").remove(key);
    }

    /// Consecutive failures of `key` so far.
    pub fn failures(&self, key: &str) -> u32 {
        let f = self.failures.lock().expect("backoff lock");
        f.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_near_a_second_doubles_and_is_capped() {
        assert_eq!(error_delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(error_delay(1, 0.5), Duration::from_millis(500));
        assert_eq!(error_delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(error_delay(5, 1.0), Duration::from_secs(16));
        assert_eq!(error_delay(9, 1.0), Duration::from_secs(256));
        assert_eq!(error_delay(10, 1.0), ERROR_BACKOFF_CAP);
        assert_eq!(error_delay(u32::MAX, 1.0), ERROR_BACKOFF_CAP);
        assert_eq!(error_delay(0, 7.0), Duration::from_secs(1));
    }

    #[test]
    fn per_object_and_reset_on_success() {
        let b = ErrorBackoff::default();
        let first = b.next("ns/a");
        assert!(first <= Duration::from_secs(1), "{first:?}");
        b.next("ns/a");
        let third = b.next("ns/a");
        assert!(third >= Duration::from_secs(2), "{third:?}");
        assert!(
            b.next("ns/b") <= Duration::from_secs(1),
            "another object starts afresh"
        );
        b.reset("ns/a");
        assert_eq!(b.failures("ns/a"), 0);
        assert!(b.next("ns/a") <= Duration::from_secs(1));
    }
}
