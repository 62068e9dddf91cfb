//! An overlay whose upper and work dirs sit in a limited directory, as a sandbox's root does:
//! writes through the overlay hit the limit (as root; skipped elsewhere).

#![allow(clippy::expect_used)]

mod common;

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::{fill, is_quota_error, Fixture};

const MIB: u64 = 1 << 20;

fn mount_overlay(lower: &Path, dir: &Path, merged: &Path) -> io::Result<()> {
    fs::create_dir_all(dir.join("upper"))?;
    fs::create_dir_all(dir.join("work"))?;
    fs::create_dir_all(merged)?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    let (data, target) = (CString::new(data)?, CString::new(merged.as_os_str().as_bytes())?);
    // SAFETY: all arguments are NUL-terminated strings living across the call.
    let rc = unsafe { libc::mount(c"overlay".as_ptr(), target.as_ptr(), c"overlay".as_ptr(), 0, data.as_ptr().cast()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unmount(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: `c` is a NUL-terminated path living across the call.
    let rc = unsafe { libc::umount2(c.as_ptr(), 0) };
    assert_eq!(rc, 0, "umount {}: {}", path.display(), io::Error::last_os_error());
}

#[test]
fn overlay_writes_hit_the_limit_of_the_upper_dir() {
    let Some(fx) = Fixture::new("overlay_writes_hit_the_limit_of_the_upper_dir") else { return };
    let quotas = fx.open();
    let lower = fx.base.join("lower");
    fs::create_dir_all(&lower).expect("mkdir lower");
    fs::write(lower.join("from-lower"), vec![1u8; MIB as usize]).expect("write lower file");

    let (small, big) = (fx.sandboxes().join("small"), fx.sandboxes().join("big"));
    quotas.limit(&small, 8 * MIB).expect("limit small");
    quotas.limit(&big, 64 * MIB).expect("limit big");
    let (m_small, m_big) = (fx.base.join("merged-small"), fx.base.join("merged-big"));
    mount_overlay(&lower, &small, &m_small).expect("mount small overlay");
    mount_overlay(&lower, &big, &m_big).expect("mount big overlay");

    let (written, err) = fill(&m_small.join("big"), 32 * MIB);
    let err = err.expect("32 MiB through an overlay limited to 8 MiB must fail");
    assert!(is_quota_error(&err), "unexpected error: {err}");
    assert!(written <= 8 * MIB, "wrote {written}");
    eprintln!("through the overlay: stopped after {written} bytes with: {err}");
    // With the limit reached, changing a lower file (a copy-up of 1 MiB) is refused too.
    let copy_up =
        fs::OpenOptions::new().append(true).open(m_small.join("from-lower")).and_then(|mut f| f.write_all(b"x"));
    assert!(copy_up.as_ref().is_err_and(is_quota_error), "copy-up: {copy_up:?}");

    // The other sandbox's overlay is unaffected and can copy up.
    let (written, err) = fill(&m_big.join("big"), 32 * MIB);
    assert!(err.is_none() && written == 32 * MIB, "{written} {err:?}");
    let mut f = fs::OpenOptions::new().append(true).open(m_big.join("from-lower")).expect("copy-up");
    f.write_all(b"x").expect("append after copy-up");
    drop(f);
    assert_eq!(fs::metadata(big.join("upper/from-lower")).expect("copied up").len(), MIB + 1);
    assert_eq!(fs::metadata(lower.join("from-lower")).expect("lower").len(), MIB, "lower untouched");

    unmount(&m_small);
    unmount(&m_big);
    quotas.release(&small).expect("release small");
    quotas.release(&big).expect("release big");
    fx.finish(quotas);
}
