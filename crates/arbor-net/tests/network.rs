//! Sandbox networking on the real kernel, as root, inside namespaces the tests create.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddrV4;

use arbor_net::{Config, Network, Policy, SandboxNet};
use common::*;

/// Runs `body` on the thread of a fresh test host namespace, with a `Network` config whose
/// pins go to a private directory. Skips (with a notice) where namespaces cannot be made.
fn on_host<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Config) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let Some(host) = NsThread::new() else { return };
    let pins = PinDir::new(test);
    let cfg = Config { netns_dir: pins.0.clone(), ..Config::default() };
    let outcome = host.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(body(cfg))))
    });
    // Unpin whatever the body left (also after a failure), then let the host namespace go.
    drop(pins);
    drop(host);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Starts a server on `port` inside a sandbox answering with its id.
fn serve_in(net: &SandboxNet, port: u16) -> Server {
    let id = net.id.clone();
    in_netns(&net.netns_path, move || serve(SocketAddrV4::new([0, 0, 0, 0].into(), port), &id))
}

/// Connects from inside a sandbox.
fn fetch_from(net: &SandboxNet, addr: std::net::Ipv4Addr, port: u16) -> Option<String> {
    in_netns(&net.netns_path, move || fetch(addr, port))
}

/// Connects from the host to a sandbox's server, which must answer; shows the state if not.
fn reach(net: &SandboxNet, port: u16) -> String {
    if let Some(reply) = fetch(net.host_addr, port) {
        return reply;
    }
    eprintln!("host:\n{}", sh("ip addr; ip route; ip neigh; nft list ruleset"));
    eprintln!("inside:\n{}", in_netns(&net.netns_path, || sh("ip addr; ip route; ip neigh")));
    panic!("host cannot reach {} at {}:{port}", net.id, net.host_addr);
}

fn links() -> String {
    sh("ip -o link show")
}

fn table() -> String {
    sh("nft list table inet arbor")
}

#[test]
fn same_inner_address_distinct_host_addresses_and_host_reaches_each() {
    on_host("reach", |cfg| async move {
        let net = Network::new(cfg).await.unwrap();
        let a = net.create("sb-a", Policy::default()).await.unwrap();
        let b = net.create("sb-b", Policy::default()).await.unwrap();
        assert_eq!(a.inner_addr, b.inner_addr);
        assert_eq!(a.inner_addr.to_string(), "169.254.0.21");
        assert_ne!(a.host_addr, b.host_addr);
        for sb in [&a, &b] {
            let inside = in_netns(&sb.netns_path, || sh("ip -4 -o addr show; ip route"));
            assert!(inside.contains("eth0    inet 169.254.0.21/30"), "{inside}");
            assert!(inside.contains("default via 169.254.0.22 dev eth0"), "{inside}");
            assert!(inside.contains("lo    inet 127.0.0.1/8"), "{inside}");
        }
        let _sa = serve_in(&a, 7000);
        let _sb = serve_in(&b, 7000);
        for sb in [&a, &b] {
            let reply = reach(sb, 7000);
            // Answer: id, the peer as the sandbox sees it, the sandbox's own local address.
            let expected = format!("{} {}:", sb.id, sb.veth_host_addr);
            assert!(reply.starts_with(&expected), "{reply:?} vs {expected:?}");
            assert!(reply.ends_with(" 169.254.0.21:7000"), "{reply}");
        }
        net.destroy("sb-a").await.unwrap();
        net.destroy("sb-b").await.unwrap();
    });
}

#[test]
fn sandbox_reaches_neither_host_nor_other_sandboxes() {
    on_host("isolation", |cfg| async move {
        let _inet = Internet::new(80);
        let net = Network::new(cfg).await.unwrap();
        let open = Policy { internet: true, ..Policy::default() };
        let a = net.create("iso-a", open.clone()).await.unwrap();
        let b = net.create("iso-b", open).await.unwrap();
        let _host_srv = serve(SocketAddrV4::new([0, 0, 0, 0].into(), 7100), "host");
        let _b_srv = serve_in(&b, 7000);
        // Controls: the host's server and B's server answer where allowed.
        assert!(fetch(a.veth_host_addr, 7100).is_some());
        reach(&b, 7000);
        // Egress works for A, so what follows is blocked by isolation, not by policy.
        assert!(fetch_from(&a, INTERNET, 80).is_some());
        for target in [a.veth_host_addr, a.inner_gateway, INTERNET_GW, b.veth_host_addr] {
            assert_eq!(fetch_from(&a, target, 7100), None, "sandbox reached host at {target}");
        }
        assert_eq!(fetch_from(&a, b.host_addr, 7000), None, "sandbox reached another sandbox");
        // A sandbox that forges another source address (here B's outer one) gets nothing out.
        let spoof = in_netns(&a.netns_path, move || {
            let gw = "169.254.0.22";
            sh(&format!("ip addr add {}/32 dev eth0", b.host_addr));
            sh(&format!("ip route replace default via {gw} src {}", b.host_addr));
            let r = fetch(INTERNET, 80);
            sh(&format!("ip route replace default via {gw} && ip addr del {}/32 dev eth0", b.host_addr));
            r
        });
        assert_eq!(spoof, None, "forged source address got through");
        assert!(fetch_from(&a, INTERNET, 80).is_some(), "sandbox works again with its own address");
        net.destroy("iso-a").await.unwrap();
        net.destroy("iso-b").await.unwrap();
    });
}

#[test]
fn egress_follows_the_policy() {
    on_host("egress", |cfg| async move {
        let _inet = Internet::new(80);
        sh(&format!("ip route add default via {INTERNET}"));
        let net = Network::new(cfg).await.unwrap();
        let sb = net.create("eg", Policy { internet: true, ..Policy::default() }).await.unwrap();
        let reply = fetch_from(&sb, INTERNET, 80).expect("internet=true reaches the internet host");
        // Masqueraded: the internet host sees the test host's address, not the sandbox's.
        assert!(reply.starts_with(&format!("internet {INTERNET_GW}:")), "{reply}");

        net.set_policy("eg", Policy::default()).await.unwrap();
        assert_eq!(fetch_from(&sb, INTERNET, 80), None, "internet=false must drop egress");

        let deny = Policy { internet: true, deny_out: vec!["198.51.100.0/24".parse().unwrap()], ..Policy::default() };
        net.set_policy("eg", deny).await.unwrap();
        assert_eq!(fetch_from(&sb, INTERNET, 80), None, "deny_out must win");

        let allow =
            Policy { internet: false, allow_out: vec!["198.51.100.1/32".parse().unwrap()], ..Policy::default() };
        net.set_policy("eg", allow.clone()).await.unwrap();
        assert!(fetch_from(&sb, INTERNET, 80).is_some(), "allow_out opens a destination");
        assert_eq!(net.get("eg").await.unwrap().policy, Some(allow));

        // E2B's allow-list: everything denied but what allow_out names.
        let only = Policy {
            internet: true,
            allow_out: vec!["198.51.100.1/32".parse().unwrap()],
            deny_out: vec!["0.0.0.0/0".parse().unwrap()],
        };
        net.set_policy("eg", only).await.unwrap();
        assert!(fetch_from(&sb, INTERNET, 80).is_some(), "allow_out wins over deny_out");

        // A new sandbox without internet is cut off from the start.
        let off = net.create("eg-off", Policy::default()).await.unwrap();
        assert_eq!(fetch_from(&off, INTERNET, 80), None);
        net.destroy("eg").await.unwrap();
        net.destroy("eg-off").await.unwrap();
    });
}

#[test]
fn destroy_leaves_nothing_and_addresses_are_reused() {
    on_host("destroy", |cfg| async move {
        let dir = cfg.netns_dir.clone();
        let net = Network::new(cfg).await.unwrap();
        let a = net.create("d-a", Policy::default()).await.unwrap();
        let b = net.create("d-b", Policy::default()).await.unwrap();
        assert!(links().contains(&format!("{}@", a.host_ifname)));
        net.destroy("d-a").await.unwrap();
        assert!(!links().contains(&format!("{}@", a.host_ifname)), "{}", links());
        assert!(!dir.join("d-a").exists());
        let t = table();
        assert!(!t.contains(&format!("\"{}\"", a.host_ifname)) && !t.contains("chain sb_0"), "{t}");
        assert!(matches!(net.destroy("d-a").await, Err(arbor_net::Error::NotFound(_))));

        let c = net.create("d-c", Policy::default()).await.unwrap();
        assert_eq!(c.host_addr, a.host_addr, "released block is reused");
        assert_eq!(c.host_ifname, a.host_ifname);
        let _srv = serve_in(&c, 7000);
        assert!(reach(&c, 7000).starts_with("d-c "));
        assert!(matches!(net.create("d-c", Policy::default()).await, Err(arbor_net::Error::AlreadyExists(_))));
        assert!(matches!(net.create("../x", Policy::default()).await, Err(arbor_net::Error::InvalidId(_))));

        net.destroy("d-b").await.unwrap();
        net.destroy("d-c").await.unwrap();
        let _ = b;
        assert!(!links().contains("arb"), "{}", links());
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
        let t = table();
        assert!(!t.contains("chain sb_") && !t.contains("elements"), "{t}");
    });
}

#[test]
fn reconcile_adopts_survivors_and_removes_leftovers() {
    on_host("reconcile", |cfg| async move {
        let dir = cfg.netns_dir.clone();
        let first = Network::new(cfg.clone()).await.unwrap();
        let mut created = Vec::new();
        for id in ["r-a", "r-b", "r-c"] {
            created.push(first.create(id, Policy::default()).await.unwrap());
        }
        // A crash: the state is lost, the kernel objects stay. Plus a stray link of ours.
        drop(first);
        sh("ip link add arb77 type veth peer name stray77");

        let second = Network::new(cfg).await.unwrap();
        let mut ids = second.ids().await;
        ids.sort();
        assert_eq!(ids, ["r-a", "r-b", "r-c"]);
        let keep: HashSet<String> = ["r-b".to_owned()].into();
        let mut removed = second.reconcile(&keep).await.unwrap();
        removed.sort();
        assert_eq!(removed, ["arb77", "r-a", "r-c"]);

        let b = second.get("r-b").await.unwrap();
        assert_eq!(b.host_addr, created[1].host_addr);
        assert_eq!(b.policy, None);
        let _srv = serve_in(&b, 7000);
        assert!(reach(&b, 7000).starts_with("r-b "));
        let l = links();
        assert!(!l.contains("arb0@") && !l.contains("arb2@") && !l.contains("arb77"), "{l}");
        let t = table();
        assert!(t.contains("chain sb_1") && !t.contains("chain sb_0") && !t.contains("chain sb_2"), "{t}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

        // The freed blocks are handed out again, lowest first.
        let again = second.create("r-d", Policy::default()).await.unwrap();
        assert_eq!(again.host_addr, created[0].host_addr);

        second.reconcile(&HashSet::new()).await.unwrap();
        assert!(!links().contains("arb"), "{}", links());
        assert!(!table().contains("chain sb_"));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    });
}

#[test]
fn concurrent_creates_and_destroys_leave_nothing() {
    on_host("concurrent", |cfg| async move {
        let dir = cfg.netns_dir.clone();
        let net = Network::new(cfg).await.unwrap();
        let ids: Vec<String> = (0..8).map(|i| format!("c-{i}")).collect();
        let started = std::time::Instant::now();
        let nets = futures::future::join_all(ids.iter().map(|id| net.create(id, Policy::default()))).await;
        let nets: Vec<SandboxNet> = nets.into_iter().map(Result::unwrap).collect();
        eprintln!("created {} sandbox networks concurrently in {:?}", nets.len(), started.elapsed());
        let addrs: HashSet<_> = nets.iter().map(|n| n.host_addr).collect();
        assert_eq!(addrs.len(), nets.len());
        for n in &nets {
            let _srv = serve_in(n, 7000);
            assert!(reach(n, 7000).starts_with(&format!("{} ", n.id)));
        }
        let started = std::time::Instant::now();
        for r in futures::future::join_all(ids.iter().map(|id| net.destroy(id))).await {
            r.unwrap();
        }
        eprintln!("destroyed them concurrently in {:?}", started.elapsed());
        assert!(!links().contains("arb"), "{}", links());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let t = table();
        assert!(!t.contains("chain sb_") && !t.contains("elements"), "{t}");
    });
}
