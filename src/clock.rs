//! The controller's clock, injected so that tests and the benchmark can fix or move time.
//! A leaf module: the reconciler and the validation cache both age with it.

use std::sync::Arc;

use jiff::Timestamp;

pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system() -> Clock {
    Arc::new(Timestamp::now)
}

/// Now, in whole seconds: status strings stay stable and short.
pub fn now_seconds(clock: &Clock) -> Timestamp {
    Timestamp::from_second(clock().as_second()).expect("the clock is in range")
}
