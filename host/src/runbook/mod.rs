//! Runbooks: YAML manifests of steps (checks and mitigations), validated completely
//! before anything runs, then executed as a DAG.
//!
//! - [`yaml`]: YAML into a tree that keeps line numbers;
//! - [`manifest`]: the schema (documented in `docs/runbooks.md`);
//! - [`template`]: `${{ inputs.X }}` / `${{ env.X }}`;
//! - [`condition`]: `when` expressions;
//! - [`prepare`]: validation and resolution into a runnable [`prepare::Runbook`];
//! - [`executor`]: the DAG run, retries, timeouts, abort, plan/apply/approval;
//! - [`audit`]: the append-only, fsync'd log of every apply.

pub mod audit;
pub mod condition;
pub mod executor;
pub mod manifest;
pub mod prepare;
pub mod template;
pub mod yaml;
