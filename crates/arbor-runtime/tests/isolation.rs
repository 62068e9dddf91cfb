//! Isolation of real `base`-template sandboxes with networking: the host's
//! processes, files and services, other sandboxes, and egress by policy.
//! Runs on a test host: a fresh network namespace with a fake internet host
//! (TEST-NET-2) in another one, both made by the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbor_net::Policy;
use arbor_runtime::{Driver, SandboxSpec};
use common::{exec_at, sh, Output};
use std::{
    collections::BTreeMap,
    io::Write,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::mpsc,
};

const INTERNET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PORT: u16 = 8081;

fn spec(id: &str, layers: &[PathBuf], internet: bool) -> SandboxSpec {
    SandboxSpec {
        id: id.into(),
        layers: layers.to_vec(),
        hostname: id.into(),
        env: BTreeMap::new(),
        access_token: None,
        vcpus: 1,
        memory_mib: 256,
        pids: 256,
        disk_mib: None,
        network: Some(Policy { internet, ..Policy::default() }),
    }
}

/// Answers every connection on `addr` with `reply`, on a thread of the
/// calling thread's namespace, until `stop` is dropped.
fn serve(addr: SocketAddr, reply: &'static str) -> mpsc::Sender<()> {
    let listener = TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::spawn(move || loop {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{reply}", reply.len());
            }
            Err(_) => {
                if !matches!(
                    stopped.recv_timeout(std::time::Duration::from_millis(5)),
                    Err(mpsc::RecvTimeoutError::Timeout)
                ) {
                    return;
                }
            }
        }
    });
    stop
}

/// A fake internet host in a namespace of its own, linked to the test host.
fn internet() -> mpsc::Sender<()> {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
        // Configured from the host side; then serve until the test ends.
        let _: Result<(), _> = stop_rx.recv();
    });
    let tid = tid_rx.recv().unwrap();
    sh(&format!(
        "ip link add tinet type veth peer name eth0 netns {tid} && \
         ip addr add 198.51.100.2/24 dev tinet && ip link set tinet up && \
         nsenter --net=/proc/{tid}/task/{tid}/ns/net sh -c \
           'ip link set lo up && ip addr add {INTERNET}/24 dev eth0 && ip link set eth0 up'"
    ));
    let ns = std::fs::File::open(format!("/proc/{tid}/task/{tid}/ns/net")).unwrap();
    let (srv_tx, srv_rx) = mpsc::channel();
    std::thread::spawn(move || {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let stop = serve(SocketAddr::from((INTERNET, PORT)), "internet");
        srv_tx.send(()).unwrap();
        // Keeps the server (and with it the namespace) until the test ends.
        std::thread::park();
        drop(stop);
    });
    srv_rx.recv().unwrap();
    // A fresh veth may drop packets until the kernel's link watcher activates
    // it (up to a second): wait until the test host itself gets an answer.
    let target = SocketAddr::from((INTERNET, PORT));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while TcpStream::connect_timeout(&target, std::time::Duration::from_millis(200)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the fake internet host never answered");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stop_tx
}

fn curl(out: &Output) -> &str {
    out.stdout.trim()
}

#[test]
fn sandboxes_see_nothing_of_the_host_or_each_other() {
    if let Some(what) = common::missing() {
        eprintln!("skipping: needs {what}");
        return;
    }
    let Some(layers) = common::base_layers() else {
        eprintln!("skipping: needs the base template (scripts/setup.sh --no-start)");
        return;
    };
    common::on_test_host(move || async move {
        let tmp = tempfile::tempdir().unwrap();
        let driver = common::driver(tmp.path(), true).await;
        let _internet = internet();
        // A service of the host's own, on every host address.
        let _host_service = serve(SocketAddr::from(([0, 0, 0, 0], 8082)), "host-service");
        let offline = driver.create(&spec("iso-off", &layers, false)).await.unwrap();
        let online = driver.create(&spec("iso-on", &layers, true)).await.unwrap();
        let envd = |s: &arbor_runtime::Sandbox| SocketAddr::from((s.host_addr.unwrap(), 49983));
        let run = |s: &arbor_runtime::Sandbox, user: &str, script: &str| exec_at(envd(s), user, "/bin/bash", script);
        let fetch = |s: &arbor_runtime::Sandbox, url: &str| {
            run(s, "user", &format!("curl -s --max-time 1 {url} || echo blocked"))
        };

        // The user of E2B's image, with passwordless sudo.
        let who = run(&offline, "user", "id -un; sudo -n id -u; echo $HOME");
        assert_eq!(who.stdout, "user\n0\n/home/user\n", "{who:?}");
        // Host processes and files are invisible.
        let ps = run(&offline, "user", "ps -e --no-headers | wc -l; ls /work /root/.cargo 2>&1 | head -2");
        let count: u32 = ps.stdout.lines().next().unwrap().trim().parse().unwrap();
        assert!(count <= 5, "the sandbox sees {count} processes: {ps:?}");
        assert!(ps.stdout.contains("No such file"), "{ps:?}");

        // Egress follows the policy: the fake internet host answers only the online sandbox.
        // The online sandbox gets a few one-second tries: its links came up
        // moments ago, and CI once lost the first packets of this path (the
        // fake internet host itself answered the test host). The offline one
        // is asked after, once the path is known to work.
        let url = format!("http://{INTERNET}:{PORT}/");
        let tries = format!("for i in 1 2 3 4 5; do curl -s --max-time 1 {url} && exit 0; done; echo blocked");
        assert_eq!(curl(&run(&online, "user", &tries)), "internet");
        assert_eq!(curl(&fetch(&offline, &url)), "blocked");

        // The host's own services are out of reach on every address it has toward the sandbox.
        let net = driver.network().unwrap().get("iso-on").await.unwrap();
        for addr in [net.inner_gateway, net.veth_host_addr, Ipv4Addr::new(198, 51, 100, 2)] {
            assert_eq!(curl(&fetch(&online, &format!("http://{addr}:8082/"))), "blocked", "host service via {addr}");
        }
        // The test host itself reaches its service (the server works).
        assert!(sh("curl -s --max-time 1 http://127.0.0.1:8082/").contains("host-service"));

        // Another sandbox's envd is out of reach, though the host reaches both.
        let other = format!("http://{}:49983/health", offline.host_addr.unwrap());
        assert_eq!(curl(&fetch(&online, &other)), "blocked");
        assert!(run(&offline, "user", "true").status.contains("exit status 0"));

        driver.destroy("iso-off").await.unwrap();
        driver.destroy("iso-on").await.unwrap();
        assert!(sh("ip -o link show").lines().all(|l| !l.contains("arb")), "a veth survived destroy");
    });
}
