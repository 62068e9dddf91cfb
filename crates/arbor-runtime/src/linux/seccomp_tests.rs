//! Runs the generated program through a small classic-BPF interpreter for
//! every system call number, as the kernel would.
#![allow(clippy::unwrap_used)]

use super::*;

/// `struct seccomp_data` as the filter sees it.
struct Data {
    nr: u32,
    arch: u32,
    args: [u64; 6],
}

impl Data {
    fn word(&self, offset: u32) -> u32 {
        match offset {
            0 => self.nr,
            4 => self.arch,
            16..=63 if offset & 3 == 0 => {
                let arg = self.args[((offset - 16) / 8) as usize];
                if offset & 7 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            _ => panic!("load at {offset}"),
        }
    }
}

/// The filter's answer, checking every jump stays in the program.
fn run(data: &Data) -> u32 {
    let (mut pc, mut acc, mut steps) = (0usize, 0u32, 0);
    loop {
        let i = FILTER[pc];
        steps += 1;
        assert!(steps <= 100, "{} takes over 100 instructions", data.nr);
        let next = match i.code {
            0x20 => {
                acc = data.word(i.k);
                pc + 1
            }
            0x54 => {
                acc &= i.k;
                pc + 1
            }
            0x05 => pc + 1 + i.k as usize,
            0x15 | 0x25 | 0x35 => {
                let taken = match i.code {
                    0x15 => acc == i.k,
                    0x25 => acc > i.k,
                    _ => acc >= i.k,
                };
                pc + 1 + usize::from(if taken { i.jt } else { i.jf })
            }
            0x06 => return i.k,
            code => panic!("unexpected opcode {code:#x} at {pc}"),
        };
        assert!(next < FILTER.len(), "jump out of the program at {pc}");
        pc = next;
    }
}

fn call(nr: i64, args: [u64; 6]) -> u32 {
    run(&Data { nr: u32::try_from(nr).unwrap(), arch: AUDIT_ARCH, args })
}

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const EPERM: u32 = libc::SECCOMP_RET_ERRNO | 1;
const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | 38;
const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;

#[test]
fn every_number_gets_the_profiles_answer() {
    for nr in 0..1200u32 {
        let want = if ENOSYS_NRS.contains(&nr) || nr > NEWEST_KNOWN {
            ENOSYS
        } else if NOTIFY_NRS.contains(&nr) {
            NOTIFY
        } else if ALLOWED.contains(&nr) {
            ALLOW
        } else if CONDITIONAL.contains(&nr) {
            continue;
        } else {
            EPERM
        };
        assert_eq!(call(i64::from(nr), [0; 6]), want, "system call {nr}");
    }
    // x32 calls carry bit 30: above every known number.
    assert_eq!(call(0x4000_0000 | libc::SYS_read, [0; 6]), ENOSYS);
    assert_eq!(run(&Data { nr: 3, arch: 0x4000_0003, args: [0; 6] }), libc::SECCOMP_RET_KILL_PROCESS);
}

#[test]
fn the_profile_allows_what_envd_and_userland_need() {
    for nr in [libc::SYS_read, libc::SYS_execve, libc::SYS_setresuid, libc::SYS_setfsuid, libc::SYS_pidfd_open] {
        assert_eq!(call(nr, [0; 6]), ALLOW, "{nr}");
    }
    for nr in [libc::SYS_bpf, libc::SYS_keyctl, libc::SYS_io_uring_setup, libc::SYS_setns, libc::SYS_fsopen] {
        assert_eq!(call(nr, [0; 6]), EPERM, "{nr}");
    }
    // The supervisor decides on these (FUSE only); the new mount API stays refused.
    for nr in [libc::SYS_mount, libc::SYS_umount2] {
        assert_eq!(call(nr, [0; 6]), NOTIFY, "{nr}");
    }
    assert_eq!(call(libc::SYS_clone3, [0; 6]), ENOSYS);
}

#[test]
fn namespace_flags_sockets_and_personalities_are_checked() {
    let flags = |f: i32| u64::from(f.unsigned_abs());
    let thread = flags(libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND | libc::CLONE_FS);
    assert_eq!(call(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(call(libc::SYS_clone, [u64::from(libc::SIGCHLD.unsigned_abs()), 0, 0, 0, 0, 0]), ALLOW);
    for ns in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET, libc::CLONE_NEWPID, libc::CLONE_NEWCGROUP] {
        assert_eq!(call(libc::SYS_clone, [flags(ns) | thread, 0, 0, 0, 0, 0]), EPERM, "clone {ns:#x}");
        assert_eq!(call(libc::SYS_unshare, [flags(ns), 0, 0, 0, 0, 0]), EPERM, "unshare {ns:#x}");
    }
    assert_eq!(call(libc::SYS_unshare, [flags(libc::CLONE_NEWTIME), 0, 0, 0, 0, 0]), EPERM);
    assert_eq!(call(libc::SYS_unshare, [flags(libc::CLONE_FILES), 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(call(libc::SYS_socket, [40, 1, 0, 0, 0, 0]), EPERM, "AF_VSOCK");
    assert_eq!(call(libc::SYS_socket, [2, 1, 0, 0, 0, 0]), ALLOW, "AF_INET");
    // A dword compares the low 32 bits: junk above them does not matter.
    assert_eq!(call(libc::SYS_socket, [(1 << 32) | 40, 1, 0, 0, 0, 0]), EPERM);
    for p in [0, 8, 0x20000, 0x20008, 0xffff_ffff] {
        assert_eq!(call(libc::SYS_personality, [p, 0, 0, 0, 0, 0]), ALLOW, "personality {p:#x}");
    }
    assert_eq!(call(libc::SYS_personality, [0x0040000, 0, 0, 0, 0, 0]), EPERM, "ADDR_NO_RANDOMIZE");
}
