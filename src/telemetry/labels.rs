//! The label sets of the operator's series.

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};

/// The labels of an integration's series: its namespace and name, then the owner labels
/// copied from the integration ([`owner`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct IntegrationLabels {
    pub namespace: String,
    pub name: String,
    pub owner: Vec<(String, String)>,
}

impl EncodeLabelSet for IntegrationLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [
            ("namespace", self.namespace.as_str()),
            ("name", self.name.as_str()),
        ]
        .encode(encoder)?;
        self.owner.encode(encoder)
    }
}

/// An integration's Ready reason (the REASON column of `kubectl get mmi`), one series at 1.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ReasonLabels {
    pub integration: IntegrationLabels,
    pub reason: String,
}

impl EncodeLabelSet for ReasonLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.integration.encode(encoder)?;
        [("reason", self.reason.as_str())].encode(encoder)
    }
}

/// What an integration's series were last published with, to remove exactly those.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Published {
    pub(super) labels: IntegrationLabels,
    pub(super) ready_reason: Option<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValidationLabels {
    pub outcome: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub status: String,
}

/// Labels of a NocoBase request: the action (`environmentVariables:list`, `app:refresh`,
/// ...) and the HTTP status (`error` when none came back).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NocoBaseRequestLabels {
    pub operation: String,
    pub status: String,
}
