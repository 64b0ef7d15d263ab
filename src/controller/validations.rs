//! Single-flight validation with a short-lived cache of definitive answers: integrations
//! that share identical credentials cost one Microsoft call, however many reconcile at
//! once. Only Valid and Rejected are kept; an answer is reused only while it is younger
//! than the asking integration's `validation.interval`, so the interval always holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use tokio::sync::OnceCell;

use crate::clock::Clock;
use crate::fingerprint::fingerprint;
use crate::input::Credentials;
use crate::microsoft::{MicrosoftClient, Outcome, Verdict};
use crate::telemetry::{Metrics, ValidationLabels};

type Cell = Arc<OnceCell<(Timestamp, Verdict)>>;

pub struct ValidationCache {
    client: MicrosoftClient,
    /// Random per process: cache keys are never comparable outside this process.
    key: [u8; 32],
    ttl: Duration,
    cells: Mutex<HashMap<String, Cell>>,
    metrics: Arc<Metrics>,
    /// The controller's clock, so the cache ages with the same time the decisions use.
    clock: Clock,
}

impl ValidationCache {
    pub fn new(
        client: MicrosoftClient,
        ttl: Duration,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        Self {
            client,
            key: rand::random(),
            ttl,
            cells: Mutex::new(HashMap::new()),
            metrics,
            clock,
        }
    }

    /// The Microsoft client, for calls that must never be shared or cached (rotation).
    pub fn client(&self) -> &MicrosoftClient {
        &self.client
    }

    /// Validates, or joins a validation of the same credentials in flight, or reuses a
    /// definitive answer (Valid or Rejected) given less than `max_age` (and the cache's TTL)
    /// ago. An Unavailable answer is shared only with the requests that joined it in flight:
    /// the next call asks Microsoft again. The verdict carries when Microsoft answered.
    pub async fn validate(
        &self,
        creds: &Credentials,
        discover: bool,
        max_age: Duration,
    ) -> Verdict {
        let k = fingerprint(&self.key, creds, discover);
        let cell = self.cell(&k, self.ttl.min(max_age));
        let (at, v) = cell
            .get_or_init(|| async {
                let v = self.client.validate(creds, discover).await;
                self.metrics
                    .validations
                    .get_or_create(&ValidationLabels {
                        outcome: v.outcome.as_str().into(),
                        reason: v.reason.unwrap_or("").into(),
                    })
                    .inc();
                ((self.clock)(), v)
            })
            .await;
        if !matches!(v.outcome, Outcome::Valid | Outcome::Rejected) {
            let mut cells = self.cells.lock().expect("cache lock");
            if cells.get(&k).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                cells.remove(&k);
            }
        }
        Verdict {
            asked_at: Some(*at),
            ..v.clone()
        }
    }

    /// The cell for `k`: one in flight, or one answered less than `max_age` ago, else a new
    /// one. Answers older than the TTL are dropped on the way.
    fn cell(&self, k: &str, max_age: Duration) -> Cell {
        let mut cells = self.cells.lock().expect("cache lock");
        let now = (self.clock)();
        let age_below = |c: &Cell, limit: Duration| {
            let limit = SignedDuration::try_from(limit).unwrap_or(SignedDuration::ZERO);
            c.get().is_none_or(|(at, _)| at.duration_until(now) < limit)
        };
        cells.retain(|_, c| age_below(c, self.ttl));
        match cells.get(k) {
            Some(c) if age_below(c, max_age) => Arc::clone(c),
            _ => {
                let c = Cell::default();
                cells.insert(k.to_owned(), Arc::clone(&c));
                c
            }
        }
    }
}
