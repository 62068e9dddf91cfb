//! Template builds: a Dockerfile's steps (as the SDKs' `Template.build()`
//! and `arbor template build` send them) run on a node.
//!
//! * [`request`]: the build request and its steps, checked.
//! * [`builder`]: runs them. Every step that changes files runs in a fresh
//!   build sandbox (a real one, network on) on the layers so far; its
//!   changes (the overlay upper dir) become one more content-addressed layer
//!   in the node's layer store. A start command is started last and the
//!   sandbox's memory saved, so sandboxes of the template start with it
//!   running.
//! * [`cache`]: step results by (parent key, step, copied files' hash).
//! * [`copy`]: a COPY's files laid out by Docker's rules; the unpacking
//!   happens inside the sandbox (`arbor-envd untar`), so paths resolve in
//!   the image, never on the host. On the host, [`unpack`] checks the
//!   uploaded tar's entries and [`scope`] resolves sources inside it only.
//! * [`uploads`]: the uploaded COPY files, per template, never replaced,
//!   checked against the digest taken when they arrived.
//! * [`changes`]: an exported upper dir made into a clean layer.
//! * [`log`]: the build log the status endpoint serves.
//!
//! Crates: `tar` and `flate2` (the SDKs upload gzip tars), `glob` (COPY
//! source patterns, one component at a time), `xattr` and `walkdir` (cleaning layers), `hyper` (envd's API,
//! as the node already speaks it).
#![warn(missing_docs)]

pub mod builder;
pub mod cache;
pub mod changes;
pub mod copy;
pub mod envd;
pub mod error;
pub mod log;
pub mod request;
pub mod scope;
pub mod unpack;
pub mod uploads;

pub use builder::{Base, Builder, Built, Job, Progress};
pub use error::{Error, Result};
pub use log::{BuildLog, Entry, Level};
pub use request::{BuildRequest, RawStep, RegistryAuth, Step};
pub use uploads::{Published, Stored, Upload, Uploads};
