//! The sandbox's seccomp filter, modelled on Docker's default profile: an
//! allowlist whose default answer is `EPERM` (`seccomp/profile.json`,
//! compiled by `build.rs` with seccompiler for the target architecture).
//!
//! Left out, as in Docker's profile for a container without
//! `CAP_SYS_ADMIN`: namespaces (`setns`, and `clone`/`unshare` with a
//! namespace flag), the mount API, kernel modules, `kexec`, `bpf`,
//! `perf_event_open`, the kernel keyring, `io_uring`, `userfaultfd`,
//! `reboot`, `swapon`, clock setting, NUMA policy, `AF_VSOCK` sockets and
//! unusual `personality` values. Two kinds of call answer `ENOSYS` instead,
//! so that libraries fall back rather than fail: `clone3` (its flags sit
//! behind a pointer a filter cannot read; glibc then uses `clone`), and
//! every number newer than the profile knows (as on an older kernel, as
//! runc does).
//!
//! Installed with the plain `seccomp(2)` call: `seccompiler::apply_filter`
//! always sets `no_new_privs`, which would stop `sudo` (setuid) from
//! working. Without `no_new_privs` the kernel wants `CAP_SYS_ADMIN`, so this
//! runs before the capabilities are dropped.

include!(concat!(env!("OUT_DIR"), "/seccomp_allowlist.rs"));

/// Installing a filter failed.
#[derive(Debug, thiserror::Error)]
#[error("installing the seccomp {which} filter: {source}")]
pub struct SeccompError {
    which: &'static str,
    source: std::io::Error,
}

/// The newest system call the profile was written against (`mseal`, Linux
/// 6.10); numbers from 424 on are the same on every architecture.
pub const NEWEST_KNOWN: u32 = 462;
/// `clone3`.
const CLONE3: u32 = 435;

/// `AUDIT_ARCH_*` of this build, as the kernel reports it to filters.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// Installs both filters on the calling thread. Every process it starts
/// inherits them, and they stay across `execve`.
pub fn install() -> Result<(), SeccompError> {
    // Among filters answering with an errno, the one installed last wins:
    // the ENOSYS filter goes second so that it beats the EPERM default.
    load("allowlist", &ALLOWLIST)?;
    load("ENOSYS", &enosys_filter())
}

/// The second filter: `ENOSYS` for `clone3` and for numbers past
/// [`NEWEST_KNOWN`], everything else left to the allowlist. seccompiler
/// matches single numbers only, hence the hand-written program.
pub fn enosys_filter() -> [libc::sock_filter; 7] {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JGT, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    // Offsets in `struct seccomp_data`.
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    // The BPF opcodes all fit the 16-bit `code` field.
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { code: code as u16, jt, jf, k };
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS.unsigned_abs();
    // A jump's `jt`/`jf` count the instructions skipped after it.
    [
        /* 0 */ stmt(BPF_LD | BPF_W | BPF_ABS, ARCH),
        // Another ABI (x86's 32-bit one) is the allowlist's to kill.
        /* 1 */
        jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 0, 3),
        /* 2 */ stmt(BPF_LD | BPF_W | BPF_ABS, NR),
        /* 3 */ jump(BPF_JMP | BPF_JEQ | BPF_K, CLONE3, 2, 0),
        /* 4 */ jump(BPF_JMP | BPF_JGT | BPF_K, NEWEST_KNOWN, 1, 0),
        /* 5 */ stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
        /* 6 */ stmt(BPF_RET | BPF_K, enosys),
    ]
}

fn load(which: &'static str, program: &[libc::sock_filter]) -> Result<(), SeccompError> {
    let fail = |source| SeccompError { which, source };
    let len = u16::try_from(program.len()).map_err(|_| fail(std::io::Error::from_raw_os_error(libc::E2BIG)))?;
    let prog = libc::sock_fprog { len, filter: program.as_ptr().cast_mut() };
    // SAFETY: `prog` points at `program`, which outlives the call; the
    // kernel copies the instructions and keeps no pointer to them.
    let rc =
        unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog as *const libc::sock_fprog) };
    if rc == 0 {
        Ok(())
    } else {
        Err(fail(std::io::Error::last_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowlist_checks_the_architecture_and_fits_the_kernel_limit() {
        // seccompiler's programs open with: load arch, jump if ours, kill.
        assert_eq!(ALLOWLIST[0].k, 4);
        assert_eq!(ALLOWLIST[1].k, AUDIT_ARCH);
        assert_eq!(ALLOWLIST[2].k, libc::SECCOMP_RET_KILL_PROCESS);
        // BPF_MAXINSNS; the second filter adds 7 (plus 4 per filter) to the
        // kernel's 32768-instruction budget per thread.
        assert!(ALLOWLIST.len() < 4096, "{}", ALLOWLIST.len());
        // Everything not matched returns EPERM.
        let last = ALLOWLIST[ALLOWLIST.len() - 1];
        assert_eq!(last.k, libc::SECCOMP_RET_ERRNO | libc::EPERM.unsigned_abs());
    }

    #[test]
    fn enosys_jumps_land_on_the_returns() {
        let p = enosys_filter();
        let target = |pc: usize, off: u8| pc + 1 + usize::from(off);
        assert_eq!(target(1, p[1].jf), 5, "a foreign ABI is allowed here");
        assert_eq!(target(3, p[3].jt), 6, "clone3 answers ENOSYS");
        assert_eq!(target(4, p[4].jt), 6, "new numbers answer ENOSYS");
        assert_eq!(p[6].k & libc::SECCOMP_RET_DATA, libc::ENOSYS.unsigned_abs());
    }
}
