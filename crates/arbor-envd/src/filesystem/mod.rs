//! The `filesystem.Filesystem` Connect service: stat, list, make, move and
//! remove entries, and watch directories, all as the request's user.
//!
//! [`rpc`] dispatches the calls, [`entry`] describes entries (`EntryInfo`)
//! and lists directories, [`watch`] runs inotify watches for the `WatchDir`
//! stream and the polling watchers the Python sync SDK uses.

pub mod entry;
pub mod rpc;
pub mod watch;
