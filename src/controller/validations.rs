//! Single-flight validation with a short-lived result cache: integrations that share
//! identical credentials cost one Microsoft call, however many reconcile at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use tokio::sync::OnceCell;

use crate::fingerprint::fingerprint;
use crate::input::Credentials;
use crate::microsoft::{MicrosoftClient, Verdict};
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
    clock: super::reconcile::Clock,
}

impl ValidationCache {
    pub fn new(
        client: MicrosoftClient,
        ttl: Duration,
        metrics: Arc<Metrics>,
        clock: super::reconcile::Clock,
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

    /// Validates, or joins a validation of the same credentials in flight, or reuses one
    /// finished less than `ttl` ago.
    pub async fn validate(&self, creds: &Credentials, discover: bool) -> Verdict {
        let k = fingerprint(&self.key, creds, discover);
        let cell = {
            let mut cells = self.cells.lock().expect("cache lock");
            let now = (self.clock)();
            let ttl =
                jiff::SignedDuration::try_from(self.ttl).unwrap_or(jiff::SignedDuration::ZERO);
            cells.retain(|_, c| c.get().is_none_or(|(at, _)| at.duration_until(now) < ttl));
            Arc::clone(cells.entry(k).or_default())
        };
        let (_, v) = cell
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
        v.clone()
    }
}
