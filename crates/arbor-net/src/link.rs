//! Links, addresses and routes over rtnetlink.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage, State};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{Error, Result};

/// MAC of every sandbox's `eth0` and of every host-side veth end. Each veth pair is its own
/// link, so sharing them is harmless, and a restored sandbox finds its gateway's MAC unchanged.
const INNER_MAC: [u8; 6] = [0x02, 0xa7, 0xb0, 0x00, 0x00, 0x02];
const HOST_MAC: [u8; 6] = [0x02, 0xa7, 0xb0, 0x00, 0x00, 0x01];

/// The sandbox-side interface name.
pub(crate) const INNER_IFNAME: &str = "eth0";

/// Prefix of the alias that tags a host-side veth with its sandbox id.
pub(crate) const ALIAS_PREFIX: &str = "arbor:";

/// Addressing of the inside of a sandbox.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inside {
    pub(crate) addr: Ipv4Addr,
    pub(crate) prefix: u8,
    pub(crate) gateway: Ipv4Addr,
}

/// A host-side link with the arbor name prefix.
#[derive(Debug)]
pub(crate) struct HostLink {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) alias: Option<String>,
}

/// Opens an rtnetlink connection on the calling thread's namespace and drives it on `rt`.
pub(crate) fn connect(rt: &tokio::runtime::Handle) -> Result<(Handle, tokio::task::JoinHandle<()>)> {
    let _guard = rt.enter();
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| Error::io("open rtnetlink socket", e))?;
    Ok((handle, rt.spawn(conn)))
}

/// Runs `f` with an rtnetlink handle bound to the calling thread's network namespace, on a
/// small runtime of this thread (the caller is a namespace thread, outside any runtime).
fn with_netlink<F, Fut>(f: F) -> Result<()>
where
    F: FnOnce(Handle) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(|e| Error::io("build runtime", e))?;
    rt.block_on(async move {
        let (conn, nl, _) = rtnetlink::new_connection().map_err(|e| Error::io("open rtnetlink socket", e))?;
        let conn = tokio::spawn(conn);
        let result = f(nl).await;
        conn.abort();
        result
    })
}

/// First half of the inside, run in the new namespace: loopback up, the veth pair with its
/// host end moved to `host`, the address on `eth0`. `eth0` stays down; see [`finish_inside`].
pub(crate) fn setup_inside(host: Arc<OwnedFd>, host_ifname: String, inside: Inside) -> Result<()> {
    with_netlink(|nl| async move {
        let lo = index(&nl, "lo").await?.ok_or_else(|| Error::io("find lo", std::io::ErrorKind::NotFound))?;
        set_up(&nl, lo).await?;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(host_ifname.clone())
            .address(HOST_MAC.to_vec())
            .setns_by_fd(host.as_raw_fd())
            .build();
        let veth = LinkVeth::new(INNER_IFNAME, &host_ifname)
            .address(INNER_MAC.to_vec())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        nl.link().add(veth).execute().await.map_err(|e| Error::netlink(format!("create veth {host_ifname}"), e))?;
        let eth0 = inner_index(&nl).await?;
        add_addr(&nl, eth0, inside.addr, inside.prefix).await
    })
}

/// Second half of the inside, once the host end is up: `eth0` up and the default route.
///
/// The order matters. A veth end brought up while its peer is down gets its transmit queue
/// activated only later, asynchronously (by the kernel's link watcher), and drops what it sends
/// until then; the end brought up second is activated at once. The host end goes first and the
/// caller waits for its activation, so neither end can drop the first packets.
pub(crate) fn finish_inside(inside: Inside) -> Result<()> {
    with_netlink(|nl| async move {
        let eth0 = inner_index(&nl).await?;
        set_up(&nl, eth0).await?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(inside.gateway).output_interface(eth0).build();
        nl.route().add(route).execute().await.map_err(|e| Error::netlink("add default route", e))?;
        add_neighbour(&nl, eth0, inside.gateway, HOST_MAC).await
    })
}

/// A permanent neighbour entry for the other end of a sandbox's veth. Both MACs are fixed, so
/// no ARP is needed; and permanent entries escape the host-wide neighbour-table limits
/// (`gc_thresh*`, shared by all namespaces), which overflow past ~500 talking sandboxes and
/// then drop packets.
async fn add_neighbour(nl: &Handle, index: u32, addr: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
    nl.neighbours()
        .add(index, IpAddr::V4(addr))
        .link_local_address(&mac)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("add neighbour {addr}"), e))
}

/// The host end's permanent entry for the sandbox's (shared) inner address.
pub(crate) async fn add_host_neighbour(nl: &Handle, index: u32, inner: Ipv4Addr) -> Result<()> {
    add_neighbour(nl, index, inner, INNER_MAC).await
}

async fn inner_index(nl: &Handle) -> Result<u32> {
    index(nl, INNER_IFNAME).await?.ok_or_else(|| Error::io("find eth0", std::io::ErrorKind::NotFound))
}

/// Waits until the link's operational state is up: the kernel sets it in the same step that
/// activates the link's transmit queue.
pub(crate) async fn wait_oper_up(nl: &Handle, index: u32, name: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let mut links = nl.clone().link().get().match_index(index).execute();
        let link = links.try_next().await.map_err(|e| Error::netlink(format!("look up link {name}"), e))?;
        let up = link.is_some_and(|l| l.attributes.iter().any(|a| matches!(a, LinkAttribute::OperState(State::Up))));
        if up {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::io(format!("wait for {name} to come up"), std::io::ErrorKind::TimedOut));
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// The index of the link called `name`, if there is one.
pub(crate) async fn index(nl: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = nl.clone().link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        Err(e) => {
            let err = Error::netlink(format!("look up link {name}"), e);
            if err.netlink_errno() == Some(libc::ENODEV) {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }
}

pub(crate) async fn set_up(nl: &Handle, index: u32) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index).up().build();
    nl.link().set(msg).execute().await.map_err(|e| Error::netlink(format!("set link {index} up"), e))
}

pub(crate) async fn set_alias(nl: &Handle, index: u32, alias: &str) -> Result<()> {
    let msg =
        LinkUnspec::new_with_index(index).append_extra_attribute(LinkAttribute::IfAlias(alias.to_owned())).build();
    nl.link().set(msg).execute().await.map_err(|e| Error::netlink(format!("set alias of link {index}"), e))
}

pub(crate) async fn add_addr(nl: &Handle, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
    nl.address()
        .add(index, IpAddr::V4(addr), prefix)
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("add {addr}/{prefix} to link {index}"), e))
}

/// Deletes the link called `name` (and so its veth peer); a missing link is not an error.
pub(crate) async fn delete(nl: &Handle, name: &str) -> Result<()> {
    let Some(idx) = index(nl, name).await? else {
        return Ok(());
    };
    match nl.clone().link().del(idx).execute().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let err = Error::netlink(format!("delete link {name}"), e);
            if err.netlink_errno() == Some(libc::ENODEV) {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}

/// Host links whose name is `prefix` followed by a slot number.
pub(crate) async fn list(nl: &Handle, prefix: &str) -> Result<Vec<HostLink>> {
    let links: Vec<LinkMessage> =
        nl.clone().link().get().execute().try_collect().await.map_err(|e| Error::netlink("list links", e))?;
    let mut out = Vec::new();
    for link in links {
        let mut name = None;
        let mut alias = None;
        for attr in &link.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::IfAlias(a) => alias = Some(a.clone()),
                _ => {}
            }
        }
        if let Some(name) = name {
            if slot_of(&name, prefix).is_some() {
                out.push(HostLink { index: link.header.index, name, alias });
            }
        }
    }
    Ok(out)
}

/// The slot number in a host-side veth name.
pub(crate) fn slot_of(name: &str, prefix: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
