//! Carrying a NocoBase sync out (the only NocoBase I/O sequence besides [`cleanup`]): list,
//! [`plan`](super::plan::plan), write each step (one request per variable, so ownership is
//! exact), read back names and types, then `app:refresh` once and wait for NocoBase to come
//! back. The read-back comes before the refresh because NocoBase answers HTTP 503 while it
//! restarts the application. What each step means is recorded by the pure
//! [`super::record`].

use super::classify::SyncError;
use super::client::NocoBaseClient;
use super::plan::{Desired, DesiredVar, StepAction, SyncedState, cleanup_plan, plan};
use super::reason;
use super::record::{
    Place, Progress, SyncOutcome, existing_variables, invalid_names, prune, type_conflicts,
};

/// Lists, plans, writes, reads back and refreshes; never fails: every problem is in the
/// outcome, with the state that landed.
pub async fn sync(
    client: &NocoBaseClient,
    desired: &[DesiredVar],
    previous: &SyncedState,
) -> SyncOutcome {
    let mut progress = Progress::new(previous);
    let wanted: Vec<Desired> = desired.iter().map(DesiredVar::desired).collect();
    // Names are checked before anything is sent.
    if let Some(err) = invalid_names(&plan(&wanted, &[], previous).invalid_names) {
        return progress.failed(err);
    }
    let listed = match client.list().await {
        Ok(l) => l,
        Err(e) => return progress.failed(e),
    };
    let p = plan(&wanted, &listed, previous);
    if let Some(err) =
        type_conflicts(&p, client.base_url()).or_else(|| existing_variables(&p, client.base_url()))
    {
        return progress.failed(err);
    }
    for s in &p.steps {
        let d = desired
            .iter()
            .find(|d| d.name == s.name)
            .expect("steps come from desired");
        let result = match s.action {
            StepAction::Create => client.create(&[d.write()]).await,
            StepAction::Update => client.update(&d.write()).await,
        };
        match result {
            Ok(()) => progress.wrote(d, s.action),
            Err(e) => return progress.write_failed(e, desired),
        }
    }
    progress.fill_unchanged(desired, &p, &listed);
    let mut final_listing = listed;
    if !p.steps.is_empty() {
        progress.state.refresh_pending = true;
        final_listing = match client.list().await {
            Ok(l) => l,
            Err(e) => {
                prune(&mut progress.state, desired, None);
                return progress.failed(e);
            }
        };
        if let Err(e) = progress.read_back(desired, &final_listing, client.base_url()) {
            return progress.failed(e);
        }
    }
    prune(&mut progress.state, desired, Some(&final_listing));
    let mut still_restarting = false;
    if p.refresh {
        if let Err(e) = client.refresh().await {
            progress.state.refresh_pending = true;
            return progress.failed(e);
        }
        progress.state.refresh_pending = false;
        // NocoBase answers 503 while it reloads: wait here, so that the reconcile the
        // operator's own writes trigger does not find it restarting.
        still_restarting = client
            .wait_until_back()
            .await
            .is_err_and(|e| e.reason == reason::NOCOBASE_RESTARTING);
    }
    let at = Place {
        base: client.base_url(),
        app: client.app(),
    };
    progress.done(desired, &at, p.refresh, still_restarting)
}

/// The result of a [`cleanup`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupOutcome {
    /// Variables deleted from NocoBase.
    pub deleted: Vec<String>,
    /// Owned variables left in place because deletion is not opted in.
    pub kept: Vec<String>,
    pub refreshed: bool,
}

/// On deletion of the resource: with `delete_on_cleanup`, deletes the variables the
/// operator owns (never others) and refreshes once; without it, sends nothing.
pub async fn cleanup(
    client: &NocoBaseClient,
    state: &SyncedState,
    delete_on_cleanup: bool,
) -> Result<CleanupOutcome, SyncError> {
    if !delete_on_cleanup {
        let mut kept = state.owned.clone();
        kept.sort();
        kept.dedup();
        return Ok(CleanupOutcome {
            kept,
            ..Default::default()
        });
    }
    let listed = client.list().await?;
    let doomed = cleanup_plan(&state.owned, &listed);
    for name in &doomed {
        client.destroy(name).await?;
    }
    let refreshed = !doomed.is_empty();
    if refreshed {
        client.refresh().await?;
    }
    Ok(CleanupOutcome {
        deleted: doomed,
        kept: vec![],
        refreshed,
    })
}
