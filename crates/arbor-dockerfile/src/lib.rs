//! Dockerfiles for Arbor templates: parse one into the steps of the server's
//! build API (template-api.md), each step carrying its Dockerfile line, and
//! pack the build-context files its COPY instructions need.
//!
//! What is supported and what is refused is documented in
//! `docs/dockerfile.md`. The pipeline:
//! [`lexer`] (directives, comments, continuations, heredocs) →
//! [`plan`] (FROM rule, ARG/ENV scoping and substitution via [`words`],
//! WORKDIR, USER, COPY/ADD, CMD/ENTRYPOINT) → [`request`] (JSON body,
//! uploads, failed step → line). [`context`] and [`ignore`] select the files
//! of a COPY source, hash them like the SDK and make their gzip tar.
//!
//! External crates and why: `globset` (glob matching for COPY sources and
//! `.dockerignore`), `walkdir` (context walk), `sha2` (files hash), `tar` +
//! `flate2` (the upload format), `serde_json` (exec forms, the request),
//! `thiserror` ([`Error`]).
#![warn(missing_docs)]

pub mod context;
mod copy;
pub mod error;
pub mod ignore;
pub mod lexer;
pub mod plan;
pub mod request;
pub mod words;

pub use context::{BuildContext, ContextFile};
pub use error::{Error, Result};
pub use ignore::IgnoreRules;
pub use plan::{classify_from, parse, resolve_path, Base, ParseOptions, Plan, StartCmd, Step, StepKind, Warning};
pub use request::{RequestOptions, Upload};
