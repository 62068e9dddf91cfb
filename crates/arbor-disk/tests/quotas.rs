//! Real quotas on a loop-mounted test image (as root; skipped elsewhere).

mod common;

use std::fs;
use std::time::{Duration, Instant};

use arbor_disk::{Backing, Error, Quotas};
use common::{fill, is_quota_error, sync, Fixture};

const MIB: u64 = 1 << 20;

#[test]
fn limit_holds_and_other_dirs_are_unaffected() {
    let Some(fx) = Fixture::new("limit_holds_and_other_dirs_are_unaffected") else { return };
    let t = Instant::now();
    let quotas = fx.open();
    eprintln!("one-time setup (create + format a 512 MiB image, attach, mount, enable quotas): {:?}", t.elapsed());
    assert!(matches!(quotas.backing(), Backing::Image { .. }), "{:?}", quotas.backing());

    let (a, b) = (fx.sandboxes().join("a"), fx.sandboxes().join("b"));
    let qa = quotas.limit(&a, 8 * MIB).expect("limit a");
    let qb = quotas.limit(&b, 64 * MIB).expect("limit b");
    assert_ne!(qa, qb);
    fs::create_dir(a.join("upper")).expect("mkdir upper");

    let (written, err) = fill(&a.join("upper/big"), 32 * MIB);
    let err = err.expect("writing 32 MiB under an 8 MiB limit must fail");
    assert!(is_quota_error(&err), "unexpected error: {err}");
    assert!(written <= 8 * MIB, "wrote {written} bytes");
    eprintln!("limited dir: write stopped after {written} bytes with: {err}");

    let (written, err) = fill(&b.join("big"), 32 * MIB);
    assert!(err.is_none(), "other dir failed: {err:?}");
    assert_eq!(written, 32 * MIB);

    sync(quotas.root());
    let usage = quotas.usage(&a).expect("usage a");
    assert!(usage.bytes <= 8 * MIB && usage.bytes >= 6 * MIB, "{usage:?}");
    assert_eq!(usage.limit_bytes, Some(8 * MIB));
    assert!(quotas.usage(&b).expect("usage b").bytes >= 32 * MIB);

    // Limiting again is a resize of the same quota group.
    assert_eq!(quotas.limit(&a, 48 * MIB).expect("resize"), qa);
    let (_, err) = fill(&a.join("upper/more"), 16 * MIB);
    assert!(err.is_none(), "after the resize: {err:?}");
    fx.finish(quotas);
}

#[test]
fn release_deletes_the_dir_and_its_accounting() {
    let Some(fx) = Fixture::new("release_deletes_the_dir_and_its_accounting") else { return };
    let quotas = fx.open();
    let a = fx.sandboxes().join("a");
    let qa = quotas.limit(&a, 16 * MIB).expect("limit");
    fs::create_dir_all(a.join("upper/deep/tree")).expect("mkdir");
    let (_, err) = fill(&a.join("upper/deep/tree/f"), 8 * MIB);
    assert!(err.is_none(), "{err:?}");

    let t = Instant::now();
    quotas.release(&a).expect("release");
    eprintln!("release of a sandbox dir holding 8 MiB: {:?}", t.elapsed());
    assert!(!a.exists());
    quotas.release(&a).expect("releasing a removed dir is a no-op");

    // The quota group goes once the kernel has freed the blocks (here or at the next open).
    let deadline = Instant::now() + Duration::from_secs(10);
    while quotas.quota_usage(qa).is_ok() && Instant::now() < deadline {
        quotas.sync().expect("sync");
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone_by_itself = quotas.quota_usage(qa).is_err();
    drop(quotas);
    let quotas = fx.open();
    assert!(quotas.quota_usage(qa).is_err(), "quota group {qa:?} still there");
    eprintln!("quota group removed {}", if gone_by_itself { "by the kernel" } else { "by the sweep at open" });

    // The same name again is a new, empty directory with a new id.
    let qa2 = quotas.limit(&a, 16 * MIB).expect("limit again");
    assert_ne!(qa2, qa);
    sync(quotas.root());
    assert!(quotas.usage(&a).expect("usage").bytes < MIB);
    fx.finish(quotas);
}

#[test]
fn reopen_after_a_crash_reuses_the_mount_or_the_device() {
    let Some(fx) = Fixture::new("reopen_after_a_crash_reuses_the_mount_or_the_device") else { return };
    let first = fx.open();
    let Backing::Image { device, .. } = first.backing().clone() else { panic!("expected an image") };
    let a = fx.sandboxes().join("a");
    let qa = first.limit(&a, 8 * MIB).expect("limit a");
    // A crash: the process goes without a teardown, the mount stays.
    drop(first);

    let t = Instant::now();
    let quotas = fx.open();
    eprintln!("reopen with the image mounted: {:?}", t.elapsed());
    assert_eq!(quotas.backing(), &Backing::Image { image: fx.image(), device });
    assert_eq!(quotas.usage(&a).expect("usage a").limit_bytes, Some(8 * MIB));
    let qb = quotas.limit(&fx.sandboxes().join("b"), MIB).expect("limit b");
    assert!(qb > qa);
    quotas.teardown().expect("teardown");

    // A crash after the image was attached (here by a tool that did not ask for auto-clear)
    // but before it was mounted: the device is reused and detaches after the teardown.
    let out = std::process::Command::new("losetup").args(["-f", "--show"]).arg(fx.image()).output().expect("losetup");
    assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
    let attached = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let quotas = fx.open();
    assert_eq!(quotas.backing(), &Backing::Image { image: fx.image(), device: attached.into() });
    assert_eq!(quotas.usage(&a).expect("usage a").limit_bytes, Some(8 * MIB), "kept across remounts");
    fx.finish(quotas);
}

#[test]
fn refuses_what_it_cannot_account() {
    let Some(fx) = Fixture::new("refuses_what_it_cannot_account") else { return };
    // Mounting over a non-empty directory would hide what is there.
    fs::create_dir_all(fx.sandboxes().join("leftover")).expect("mkdir");
    let err = Quotas::open(&fx.sandboxes(), &fx.config()).expect_err("non-empty mount point");
    assert!(matches!(err, Error::NotEmpty(_)), "{err}");
    fs::remove_dir(fx.sandboxes().join("leftover")).expect("rmdir");

    let quotas = fx.open();
    let (a, plain) = (fx.sandboxes().join("a"), fx.sandboxes().join("plain"));
    quotas.limit(&a, MIB).expect("limit");
    fs::create_dir(&plain).expect("mkdir");
    assert!(matches!(quotas.limit(&plain, MIB), Err(Error::NotLimited(_))));
    assert!(matches!(quotas.usage(&plain), Err(Error::NotLimited(_))));
    assert!(matches!(quotas.release(&plain), Err(Error::NotLimited(_))));
    assert!(matches!(quotas.limit(&a.join("nested"), MIB), Err(Error::OutsideRoot(_))));
    assert!(matches!(quotas.limit(&fx.base.join("elsewhere"), MIB), Err(Error::OutsideRoot(_))));
    assert!(matches!(quotas.limit(&fx.sandboxes().join(".."), MIB), Err(Error::OutsideRoot(_))));
    assert!(matches!(quotas.limit(&fx.sandboxes().join("b"), 0), Err(Error::Invalid { .. })));
    fs::remove_dir(&plain).expect("rmdir");
    fx.finish(quotas);
}

#[test]
fn limit_and_release_cost() {
    let Some(fx) = Fixture::new("limit_and_release_cost") else { return };
    let quotas = fx.open();
    const N: u32 = 300;
    let dirs: Vec<_> = (0..N).map(|i| fx.sandboxes().join(format!("s{i}"))).collect();
    let t = Instant::now();
    for d in &dirs {
        quotas.limit(d, 64 * MIB).expect("limit");
    }
    let limit = t.elapsed() / N;
    for d in &dirs {
        fs::create_dir(d.join("upper")).expect("mkdir upper");
        fs::create_dir(d.join("work")).expect("mkdir work");
    }
    let t = Instant::now();
    for d in &dirs {
        quotas.release(d).expect("release");
    }
    let release = t.elapsed() / N;
    eprintln!("per sandbox, {N} sandboxes: limit (create) {limit:?}, release (delete) {release:?}");
    // Sandbox creation targets 10 ms in all; the disk limit's share must stay small.
    assert!(limit + release < Duration::from_millis(1), "limit {limit:?} + release {release:?}");
    fx.finish(quotas);
}
