//! Agent tests: suites (`*.test.yaml`) beside an agent, each case a task run on a recording
//! (replayed: the model's recorded turns, the tools really run) or on the agent's own model
//! (live, as many times as `runs:` says, against a pass rate), with assertions on what the run's
//! events show. `reagent test` is the command; this is what it runs.

mod checks;
mod report;
mod runner;
mod suite;

pub use checks::Failure;
pub use report::{case_json, junit};
pub use runner::{CaseReport, Options, Verdict, run};
pub use suite::{Case, CaseModel, Expect, Suite, discover};
