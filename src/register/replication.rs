//! Creating the service principal of an application made seconds ago. Right after
//! `POST /applications`, Graph's `POST /servicePrincipals` with the new appId can be
//! refused while the application replicates inside Microsoft Entra ID: 400
//! `Request_BadRequest` "The appId '…' of the service principal does not reference a valid
//! application object" (detail `NoBackingApplicationObject`), 404
//! `Request_ResourceNotFound`, or 403 "…the backing application of the service principal
//! being created must in the local tenant" (which Terraform's azuread provider also retries
//! as replication). Only those answers are retried, pausing 1 s doubling to 10 s, for at
//! most [`SERVICE_PRINCIPAL_WAIT`] (60 s), or `--propagation-timeout` when shorter.

use std::time::Duration;

use serde_json::Value;

use super::directory::{Directory, GraphFailure};
use super::plan;

/// The pacing of every wait for Microsoft's replication (here and in
/// [`super::propagation`]): the first pause, doubled up to the longest.
pub const FIRST_PAUSE: Duration = Duration::from_secs(1);
pub const MAX_PAUSE: Duration = Duration::from_secs(10);

/// The longest `register` waits for a new application to take a service principal.
pub const SERVICE_PRINCIPAL_WAIT: Duration = Duration::from_secs(60);

/// Whether Graph's refusal of `POST /servicePrincipals` only says that the application is
/// not replicated yet (pure). Decided by Graph's error code and its fixed sentence.
pub fn not_replicated_yet(f: &GraphFailure) -> bool {
    match f.status {
        400 => {
            f.code == "Request_BadRequest"
                && f.message
                    .contains("does not reference a valid application object")
        }
        404 => f.code == "Request_ResourceNotFound",
        403 => f.message.contains(
            "the backing application of the service principal being created must in the local tenant",
        ),
        _ => false,
    }
}

/// The pauses between attempts (pure): 1 s doubling up to 10 s, while their sum stays
/// within `budget`.
pub fn pauses(budget: Duration) -> Vec<Duration> {
    let mut out = vec![];
    let (mut pause, mut total) = (FIRST_PAUSE, Duration::ZERO);
    while total + pause <= budget {
        out.push(pause);
        total += pause;
        pause = (pause * 2).min(MAX_PAUSE);
    }
    out
}

/// Why the service principal was not created.
pub enum Refused {
    /// Graph refused for another reason (not retried).
    Graph(GraphFailure),
    /// Still not replicated when the budget was spent.
    NotReplicated {
        last: GraphFailure,
        attempts: u32,
        waited: Duration,
    },
}

/// `POST /servicePrincipals`, asked again while Graph answers that the application is not
/// replicated yet, within `budget`. Any other refusal is returned at once.
pub async fn create_service_principal(
    dir: &mut Directory,
    client_id: &str,
    budget: Duration,
) -> Result<Option<Value>, Refused> {
    let req = plan::create_service_principal(client_id);
    let mut pauses = pauses(budget).into_iter();
    let (mut attempts, mut waited) = (0, Duration::ZERO);
    loop {
        attempts += 1;
        let last = match dir.write(&req).await {
            Ok(answer) => return Ok(answer),
            Err(f) if not_replicated_yet(&f) => f,
            Err(f) => return Err(Refused::Graph(f)),
        };
        let Some(pause) = pauses.next() else {
            return Err(Refused::NotReplicated {
                last,
                attempts,
                waited,
            });
        };
        eprintln!(
            "  - service principal: Microsoft Graph does not know the new application yet (HTTP {} {}, still replicating); asking again in {}s",
            last.status,
            last.code,
            pause.as_secs()
        );
        tokio::time::sleep(pause).await;
        waited += pause;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: u16, code: &str, message: &str) -> GraphFailure {
        GraphFailure {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    #[test]
    fn only_replication_answers_are_retried() {
        let id = "11111111-2222-4333-8444-555555555555";
        let yes = [
            failure(
                400,
                "Request_BadRequest",
                &format!(
                    "The appId '{id}' of the service principal does not reference a valid application object."
                ),
            ),
            failure(
                404,
                "Request_ResourceNotFound",
                &format!(
                    "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
                ),
            ),
            failure(
                403,
                "Authorization_RequestDenied",
                "When using this permission, the backing application of the service principal being created must in the local tenant",
            ),
        ];
        assert!(yes.iter().all(not_replicated_yet));
        let no = [
            failure(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ),
            failure(
                400,
                "Request_BadRequest",
                "Invalid value specified for property 'appId'.",
            ),
            failure(
                409,
                "Request_MultipleObjectsWithSameKeyValue",
                "already exists",
            ),
            failure(503, "", "Service unavailable"),
        ];
        assert!(!no.iter().any(not_replicated_yet));
    }

    #[test]
    fn the_pauses_stay_within_the_budget() {
        let s = Duration::from_secs;
        assert_eq!(
            pauses(SERVICE_PRINCIPAL_WAIT),
            [s(1), s(2), s(4), s(8), s(10), s(10), s(10), s(10)]
        );
        assert_eq!(pauses(s(3)), [s(1), s(2)]);
        assert!(pauses(Duration::ZERO).is_empty());
        assert!(pauses(SERVICE_PRINCIPAL_WAIT).iter().sum::<Duration>() <= SERVICE_PRINCIPAL_WAIT);
    }
}
