//! Integration tests on the host's real cgroups (root only; skipped with a notice otherwise).

#![allow(clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use arbor_cgroups::{Error, Hierarchy, Limits, Version};
use common::{eventually, hierarchy, Guard};

#[test]
fn limits_are_written_and_read_back() {
    let Some(h) = hierarchy("limits_are_written_and_read_back") else {
        return;
    };
    let mut g = Guard::new(h, "limits");
    let limits = Limits { cpus: Some(1.5), memory_mib: Some(128), pids: Some(50) };
    let cg = g.create("sb", &limits);
    assert_eq!(cg.limits().expect("limits"), limits);

    // Raising memory on a live v1 cgroup must respect limit <= memsw at each step.
    cg.set_limits(&Limits { memory_mib: Some(256), ..Limits::default() }).expect("raise memory");
    let now = cg.limits().expect("limits");
    assert_eq!(now.memory_mib, Some(256));
    assert_eq!(now.pids, Some(50));
    if cg.version() == Version::V1 {
        // Swap stays off: mem+swap is pinned to the memory limit where the kernel accounts swap.
        let memory_dir = cg.dirs().into_iter().find(|d| d.starts_with("/sys/fs/cgroup/memory")).expect("memory dir");
        if let Ok(memsw) = std::fs::read_to_string(memory_dir.join("memory.memsw.limit_in_bytes")) {
            assert_eq!(memsw.trim(), (256u64 << 20).to_string());
        }
    }

    let unlimited = g.create("free", &Limits::default());
    let read = unlimited.limits().expect("limits");
    assert_eq!(read, Limits::default());

    // Creating the same cgroup again is refused and leaves the first intact.
    let again = g.hierarchy.create(&g.parent, "sb", &limits);
    assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");
    assert!(cg.exists());
}

#[test]
fn added_process_is_listed() {
    let Some(h) = hierarchy("added_process_is_listed") else {
        return;
    };
    let mut g = Guard::new(h, "member");
    let cg = g.create("sb", &Limits::default());
    let pid = g.spawn_in(&cg, "exec sleep 30");
    assert_eq!(cg.pids().expect("pids"), vec![i32::try_from(pid).expect("pid")]);
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read");
    let want = format!("/{}/sb", g.parent);
    assert!(membership.lines().filter(|l| l.ends_with(&want)).count() >= 5, "{membership}");
    // Charges follow pages allocated after the move (v1 does not migrate old charges).
    assert!(eventually(Duration::from_secs(2), || cg
        .stats()
        .is_ok_and(|s| s.pids_current >= 1 && s.memory_current > 0)));
}

#[test]
fn child_joins_before_exec() {
    let Some(h) = hierarchy("child_joins_before_exec") else {
        return;
    };
    let mut g = Guard::new(h, "join");
    let cg = g.create("sb", &Limits { pids: Some(4), ..Limits::default() });
    let fds = cg.open_procs().expect("open procs");
    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    // SAFETY: the closure only calls write(2) on fds opened before the fork; it neither
    // allocates nor takes locks, so it is sound in the child of a multi-threaded process.
    unsafe {
        cmd.pre_exec(move || fds.join_current().map_err(std::io::Error::from));
    }
    let child = cmd.spawn().expect("spawn");
    let pid = i32::try_from(child.id()).expect("pid");
    g.children.push(child);
    assert_eq!(cg.pids().expect("pids"), vec![pid]);
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read");
    assert!(membership.contains(&format!("pids:/{}/sb", g.parent)), "{membership}");
}

#[test]
fn memory_hog_is_oom_killed_inside_only() {
    let Some(h) = hierarchy("memory_hog_is_oom_killed_inside_only") else {
        return;
    };
    let mut g = Guard::new(h, "oom");
    // A bystander outside the sandbox cgroups must survive.
    let mut bystander = Command::new("sleep").arg("30").stdout(Stdio::null()).spawn().expect("spawn bystander");
    let cg = g.create("sb", &Limits { memory_mib: Some(32), ..Limits::default() });
    assert_eq!(cg.oom_kills().expect("oom_kills"), 0);
    // tail buffers everything it reads from a pipe: 256 MiB touched, 8 times the limit.
    let pid = g.spawn_in(&cg, "head -c 268435456 /dev/zero | tail -c 268435456 >/dev/null");
    assert!(g.wait_exit(pid, Duration::from_secs(20)), "hog did not end");
    assert!(cg.oom_kills().expect("oom_kills") >= 1);
    let peak = cg.stats().expect("stats").memory_peak.unwrap_or(0);
    assert!(peak <= 33 << 20, "peak {peak}");
    let alive = bystander.try_wait().expect("try_wait").is_none();
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(alive, "a process outside the cgroup was killed");
}

#[test]
fn fork_loop_stops_at_pids_limit() {
    let Some(h) = hierarchy("fork_loop_stops_at_pids_limit") else {
        return;
    };
    let mut g = Guard::new(h, "pids");
    let cg = g.create("sb", &Limits { pids: Some(8), ..Limits::default() });
    g.spawn_in(&cg, "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; wait");
    // The shell keeps trying; the count must reach the limit and stay there.
    assert!(eventually(Duration::from_secs(5), || cg.stats().is_ok_and(|s| s.pids_current == 8)));
    thread::sleep(Duration::from_millis(200));
    let stats = cg.stats().expect("stats");
    assert_eq!(stats.pids_current, 8);
    assert!(cg.pids().expect("pids").len() <= 8);
    cg.kill_all().expect("kill_all");
    assert!(cg.pids().expect("pids").is_empty());
}

#[test]
fn cpu_quota_holds() {
    let Some(h) = hierarchy("cpu_quota_holds") else {
        return;
    };
    let mut g = Guard::new(h, "cpu");
    let cg = g.create("sb", &Limits { cpus: Some(0.5), ..Limits::default() });
    g.spawn_in(&cg, "while :; do :; done");
    thread::sleep(Duration::from_millis(200));
    let (t0, u0) = (Instant::now(), cg.stats().expect("stats").cpu_usage_ns);
    thread::sleep(Duration::from_secs(1));
    let u1 = cg.stats().expect("stats").cpu_usage_ns;
    let share = (u1 - u0) as f64 / t0.elapsed().as_nanos() as f64;
    eprintln!("busy loop under a 0.5-CPU quota used {:.0}% of a CPU", share * 100.0);
    // The quota is the bound under test; the floor only shows the loop ran (2 shared cores).
    assert!(share < 0.6, "quota exceeded: {share}");
    assert!(share > 0.2, "loop barely ran: {share}");
}

#[test]
fn freeze_and_thaw() {
    let Some(h) = hierarchy("freeze_and_thaw") else {
        return;
    };
    let mut g = Guard::new(h, "freeze");
    let cg = g.create("sb", &Limits::default());
    check_freeze_thaw(&mut g, &cg);
}

fn check_freeze_thaw(g: &mut Guard, cg: &arbor_cgroups::Cgroup) {
    let pid = g.spawn_in(cg, "while :; do :; done");
    let ticks = || -> u64 {
        // utime + stime of the child, in clock ticks: works whatever controllers exist.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let after = stat.rsplit_once(')').expect("comm").1;
        let f: Vec<&str> = after.split_whitespace().collect();
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    };
    thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    cg.freeze().expect("freeze");
    eprintln!("freeze took {:?}", start.elapsed());
    assert!(cg.is_frozen().expect("is_frozen"));
    let before = ticks();
    thread::sleep(Duration::from_millis(300));
    assert!(ticks() - before <= 1, "a frozen task kept running");
    cg.thaw().expect("thaw");
    assert!(!cg.is_frozen().expect("is_frozen"));
    let before = ticks();
    assert!(eventually(Duration::from_secs(2), || ticks() > before + 5), "thawed task does not run");
}

#[test]
fn kill_all_empties_and_destroy_removes_everything() {
    let Some(h) = hierarchy("kill_all_empties_and_destroy_removes_everything") else {
        return;
    };
    let mut g = Guard::new(h, "kill");
    let cg = g.create("sb", &Limits::default());
    check_kill_and_destroy(&mut g, &cg);
}

/// The v1 fallback (freeze → SIGKILL → thaw) used when no cgroup2 twin exists.
#[test]
fn kill_all_without_cgroup_kill() {
    let Some(h) = hierarchy("kill_all_without_cgroup_kill") else {
        return;
    };
    if h.version() != Version::V1 {
        eprintln!("skipping kill_all_without_cgroup_kill: v2 host always has cgroup.kill");
        return;
    }
    let mut g = Guard::new(h.without_unified_twin(), "killv1");
    let cg = g.create("sb", &Limits::default());
    assert!(cg.dirs().iter().all(|d| !d.starts_with("/sys/fs/cgroup/unified")));
    check_kill_and_destroy(&mut g, &cg);
}

fn check_kill_and_destroy(g: &mut Guard, cg: &arbor_cgroups::Cgroup) {
    // A process tree, including one that keeps forking.
    g.spawn_in(cg, "sleep 60 & sleep 60 & (while :; do sleep 1 & wait; done) & wait");
    assert!(eventually(Duration::from_secs(2), || cg.pids().is_ok_and(|p| p.len() >= 4)));
    let start = Instant::now();
    cg.kill_all().expect("kill_all");
    eprintln!("kill_all took {:?}", start.elapsed());
    assert!(cg.pids().expect("pids").is_empty());
    // A paused sandbox is destroyed too: frozen tasks must still die.
    g.spawn_in(cg, "exec sleep 60");
    cg.freeze().expect("freeze");
    let start = Instant::now();
    cg.destroy().expect("destroy");
    eprintln!("destroy of a frozen cgroup took {:?}", start.elapsed());
    for dir in cg.dirs() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(!cg.exists());
    // Destroying twice is fine.
    cg.destroy().expect("destroy again");
}

#[test]
fn cleanup_stale_removes_leftovers() {
    let Some(h) = hierarchy("cleanup_stale_removes_leftovers") else {
        return;
    };
    let mut g = Guard::new(h, "stale");
    let keep = g.create("keep", &Limits::default());
    let busy = g.create("busy", &Limits { pids: Some(10), ..Limits::default() });
    g.create("idle", &Limits::default());
    g.spawn_in(&busy, "exec sleep 60");
    // A leftover present in one hierarchy only, as a crash in the middle of create leaves.
    let partial = g.hierarchy.open(&g.parent, "partial").expect("open");
    std::fs::create_dir(partial.dirs()[0]).expect("mkdir partial");
    g.cgroups.push(partial);

    assert_eq!(g.hierarchy.list(&g.parent).expect("list"), vec!["busy", "idle", "keep", "partial"]);
    let keep_set: HashSet<String> = ["keep".to_owned()].into();
    let mut removed = g.hierarchy.cleanup_stale(&g.parent, &keep_set).expect("cleanup");
    removed.sort();
    assert_eq!(removed, vec!["busy", "idle", "partial"]);
    assert_eq!(g.hierarchy.list(&g.parent).expect("list"), vec!["keep"]);
    assert!(keep.exists());
}

/// The cgroup2 tree of a hybrid host has no controllers, but the v2 core (membership, freeze,
/// kill, rmdir) works there: it exercises the v2 code paths on a v1 machine.
#[test]
fn v2_core_on_the_hybrid_tree() {
    let Some(h) = hierarchy("v2_core_on_the_hybrid_tree") else {
        return;
    };
    let (Version::V1, Some(root)) = (h.version(), h.unified_root()) else {
        eprintln!("skipping v2_core_on_the_hybrid_tree: not a hybrid host (covered by the other tests)");
        return;
    };
    let v2 = Hierarchy::v2(root);
    let mut g = Guard::new(v2, "v2core");
    let limited = g.hierarchy.create(&g.parent, "x", &Limits { pids: Some(5), ..Limits::default() });
    assert!(matches!(limited, Err(Error::ControllerUnavailable("pids"))), "{limited:?}");
    let cg = g.create("sb", &Limits::default());
    assert_eq!(cg.version(), Version::V2);
    assert!(cg.clone_into_fd().expect("fd").is_some());
    check_freeze_thaw(&mut g, &cg);
    cg.kill_all().expect("kill_all");
    let cg2 = g.create("sb2", &Limits::default());
    check_kill_and_destroy(&mut g, &cg2);
    assert_eq!(g.hierarchy.list(&g.parent).expect("list"), vec!["sb"]);
}
