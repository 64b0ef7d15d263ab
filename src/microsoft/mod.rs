//! Everything about Microsoft: the token request and Graph read ([`client`], the only I/O),
//! and the pure interpretation of their answers ([`classify`], [`graph`], [`verdict`]).

pub mod classify;
pub mod client;
pub mod graph;
pub mod passwords;
pub mod verdict;

pub use client::{ClientOptions, MicrosoftClient, RequestObserver};
pub use verdict::{ExpiryInfo, GraphFindings, Outcome, Registration, Verdict, reason};

use crate::input::InputProblem;

impl From<InputProblem> for Verdict {
    fn from(p: InputProblem) -> Self {
        Verdict::new(Outcome::InvalidInput, Some(p.reason), p.message)
    }
}
