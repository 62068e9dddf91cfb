//! The `filesystem.Filesystem` Connect service.

pub mod rpc;
pub mod watch;
