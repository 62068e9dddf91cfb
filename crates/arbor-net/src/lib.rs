//! Per-sandbox networking for the Arbor runtime.
//!
//! Every sandbox gets its own network namespace with loopback up and a veth pair to the host.
//! Inside, every sandbox has the same address and gateway (by default `169.254.0.21/30` via
//! `169.254.0.22`), so a checkpoint restores unchanged in any clone. The host reaches each
//! sandbox through a unique address from a pool (by default one /30 of `10.200.0.0/16` per
//! sandbox): a stateless 1:1 translation in nftables, on the host side of the veth, maps the
//! unique outer address to the shared inner one and back. nftables also masquerades egress
//! when a sandbox may use the internet, drops it otherwise, and always drops traffic from a
//! sandbox to the host's own addresses and to other sandboxes. See `docs/network.md`.
//!
//! # External crates
//! - `rtnetlink` (with `netlink-packet-route`): links, addresses and routes over netlink
//!   instead of spawning `ip`; the maintained netlink stack of the Rust ecosystem, async on
//!   tokio like the rest of Arbor. A socket is bound to the namespace of the thread that opens
//!   it, which is how the inside of a sandbox is configured.
//! - No nftables crate: rules are written in nft's own syntax and applied with `nft -f -`
//!   (Debian package `nftables`), one atomic transaction per operation, and the table is read
//!   back with `nft -j` into `serde_json` values (only chain names are needed). Tried first, the
//!   `nftables` crate's (0.6) typed schema failed to deserialize nft 1.0.6's JSON listing of
//!   this very table ("data did not match any variant of untagged enum NfObject"), and its helpers spawn `nft` in the calling thread's network
//!   namespace with no way to choose another, which a `Network` serving a namespace other than
//!   the caller's needs (`pre_exec` + `setns` here). `rustables` speaks netlink directly, but
//!   every rule becomes a hand-built list of low-level expressions (not tried here). Written in
//!   nft syntax, the rules read exactly as `nft list table inet arbor` and `docs/network.md`
//!   show them.
//! - `nix`: `unshare`, `setns` and the bind mount that pins a namespace.
//! - `ipnet`: IPv4 networks in the configuration and policies.

mod config;
mod error;
mod link;
mod network;
mod nft;
mod ns;
mod pool;

pub use config::{Config, Policy};
pub use error::{Error, Result};
pub use ipnet::Ipv4Net;
pub use network::{Network, SandboxNet};
pub use ns::Pinned;
