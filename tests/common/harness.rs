//! The pieces every reconciler harness is made of: the fake cluster with the CRD, the
//! Microsoft emulator answering for known secrets, a clock the test moves, and the log
//! capture the secret scans read. One of each, so the suites cannot drift apart.

use std::sync::{Arc, Mutex, OnceLock};

use jiff::Timestamp;
use nocobase_mail_operator::controller::reconcile::Clock;

use super::fake_api::FakeApi;
use super::{Emulator, json_response};

pub const MMI_AV: &str = "nocobase-mail-operator.dev/v1alpha1";

/// A fake API server that knows the integration kind and serves its status subresource.
pub fn fake_cluster() -> FakeApi {
    let api = FakeApi::new();
    api.register_kind(
        MMI_AV,
        "MicrosoftMailIntegration",
        "microsoftmailintegrations",
        true,
    );
    api.add_status_subresource("microsoftmailintegrations");
    api
}

/// The Microsoft emulator: a token for each of `accepted`, AADSTS7000215 (invalid secret)
/// for each of `rejected`, and Graph refusing to be read (403), as without permission.
pub async fn microsoft(accepted: &[&str], rejected: &[&str]) -> Emulator {
    let emu = Emulator::start().await;
    for s in accepted {
        emu.token_for_secret(s, json_response(200, "token_success.json"))
            .await;
    }
    for s in rejected {
        emu.token_for_secret(s, json_response(401, "aadsts7000215.json"))
            .await;
    }
    emu.graph(json_response(
        403,
        "graph_403_authorization_request_denied.json",
    ))
    .await;
    emu
}

/// A clock that stays at `at` until the test moves it, and the operator's view of it.
pub fn fixed_clock(at: Timestamp) -> (Arc<Mutex<Timestamp>>, Clock) {
    let clock = Arc::new(Mutex::new(at));
    let c = Arc::clone(&clock);
    (clock, Arc::new(move || *c.lock().unwrap()))
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line of this test binary, at trace level, for the leak scans
/// (idempotent: the first call installs the subscriber).
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = LogWriter(Arc::clone(&buf));
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || w.clone())
            .try_init();
        buf
    });
}

/// Everything logged since [`capture_logs`].
pub fn logs() -> String {
    LOGS.get()
        .map(|b| String::from_utf8_lossy(&b.lock().unwrap()).into_owned())
        .unwrap_or_default()
}
