//! The pieces every reconciler harness is made of: the fake cluster with the CRD, the
//! Microsoft emulator answering for known secrets, a clock the test moves, and the log
//! capture the secret scans read. One of each, so the suites cannot drift apart.

use std::sync::{Arc, Mutex};

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

#[allow(unused_imports)] // not every binary including the kit scans logs
pub use super::logs::{capture_logs, logs};
