//! Compiles the sandbox's seccomp profile (`seccomp/profile.json`) into one
//! classic BPF program for the target architecture, so that `arbor-launch`
//! only loads a static program.
//!
//! The profile names system calls; seccompiler's tables (Linux 6.12) give
//! each architecture's numbers, and `seccomp/bpf.rs` lays the program out.
//! Names are resolved for every supported architecture on every build, so a
//! name one of them lacks fails here rather than on that architecture.

#[path = "seccomp/bpf.rs"]
mod bpf;

use bpf::{Cond, Op, Policy};
use seccompiler::TargetArch;
use serde_json::{json, Value};
use std::{collections::BTreeSet, fmt::Write as _, path::PathBuf};

const PROFILE: &str = "seccomp/profile.json";
/// Name, seccompiler's arch, `AUDIT_ARCH_*`.
const ARCHES: [(&str, TargetArch, u32); 2] =
    [("x86_64", TargetArch::x86_64, 0xC000_003E), ("aarch64", TargetArch::aarch64, 0xC000_00B7)];

fn main() {
    println!("cargo::rerun-if-changed={PROFILE}");
    println!("cargo::rerun-if-changed=seccomp/bpf.rs");
    let text = std::fs::read_to_string(PROFILE).unwrap_or_else(|e| panic!("reading {PROFILE}: {e}"));
    let profile: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {PROFILE}: {e}"));
    let target = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let mut out = None;
    for (name, arch, audit_arch) in ARCHES {
        let policy = policy(&profile, name, arch, audit_arch);
        let program = bpf::assemble(&policy).unwrap_or_else(|e| panic!("{PROFILE} for {name}: {e}"));
        if name == target {
            out = Some(render(&policy, &program, &target));
        }
    }
    let out = out.unwrap_or_else(|| panic!("arbor-runtime has a seccomp profile for x86_64 and aarch64, not {target}"));
    let dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    std::fs::write(dir.join("seccomp_filter.rs"), out).unwrap_or_else(|e| panic!("writing the filter: {e}"));
}

/// The profile with names turned into `arch`'s numbers.
fn policy(profile: &Value, arch_name: &str, arch: TargetArch, audit_arch: u32) -> Policy {
    let nr = |name: &str| number(name, arch_name, arch);
    let strings = |v: &Value, what: &str| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("{PROFILE}: {what} is not a list"))
            .iter()
            .map(|s| s.as_str().unwrap_or_else(|| panic!("{PROFILE}: {what}: {s} is not a string")).to_string())
            .collect()
    };
    let mut policy = Policy {
        audit_arch,
        errno: u32::try_from(profile["default_errno"].as_u64().unwrap_or(0)).unwrap_or(0),
        newest_known: nr(profile["newest_known"].as_str().unwrap_or_default()),
        enosys: strings(&profile["enosys"], "enosys").iter().map(|n| nr(n)).collect(),
        notify: strings(&profile["notify"], "notify").iter().map(|n| nr(n)).collect(),
        ..Policy::default()
    };
    assert!(policy.errno != 0, "{PROFILE}: default_errno must be set");
    let mut seen = BTreeSet::new();
    for entry in profile["allow"].as_array().unwrap_or_else(|| panic!("{PROFILE}: no allow list")) {
        if let Some(arches) = entry["arches"].as_array() {
            if !arches.iter().any(|a| a == arch_name) {
                continue;
            }
        }
        let rule = entry["args"].as_array().map(|args| args.iter().map(condition).collect::<Vec<_>>());
        for name in strings(&entry["names"], "names") {
            let n = nr(&name);
            match &rule {
                None => {
                    assert!(seen.insert(name.clone()), "{PROFILE}: {name} is listed twice");
                    policy.allow.push(n);
                }
                // Entries with arguments for one call are alternatives.
                Some(rule) => match policy.conditional.iter_mut().find(|(c, _)| *c == n) {
                    Some((_, rules)) => rules.push(rule.clone()),
                    None => {
                        assert!(seen.insert(name.clone()), "{PROFILE}: {name} is also allowed always");
                        policy.conditional.push((n, vec![rule.clone()]));
                    }
                },
            }
        }
    }
    policy
}

/// An argument test in seccompiler's JSON form.
fn condition(c: &Value) -> Cond {
    let field = |f: &str| c[f].as_u64().unwrap_or_else(|| panic!("{PROFILE}: {c}: no {f}"));
    let op = match &c["op"] {
        Value::String(s) if s == "eq" => Op::Eq,
        Value::String(s) if s == "ne" => Op::Ne,
        Value::Object(o) if o.len() == 1 && o["masked_eq"].is_u64() => {
            Op::MaskedEq(o["masked_eq"].as_u64().unwrap_or(0))
        }
        other => panic!("{PROFILE}: unsupported op {other}"),
    };
    let qword = match c["type"].as_str() {
        Some("qword") => true,
        Some("dword") => false,
        _ => panic!("{PROFILE}: {c}: type must be dword or qword"),
    };
    Cond { arg: u8::try_from(field("index")).unwrap_or(u8::MAX), qword, op, value: field("val") }
}

/// `name`'s number on `arch`, from seccompiler's table: a one-call filter
/// compiles to [load arch, check arch, kill, load number, JEQ number, ...].
fn number(name: &str, arch_name: &str, arch: TargetArch) -> u32 {
    let filter =
        json!({"f": {"mismatch_action": "allow", "match_action": {"errno": 1}, "filter": [{"syscall": name}]}});
    let mut map = seccompiler::compile_from_json(filter.to_string().as_bytes(), arch)
        .unwrap_or_else(|e| panic!("{PROFILE}: {name} on {arch_name}: {e}"));
    let program = map.remove("f").unwrap_or_default();
    match program.get(3..5) {
        Some([load, jeq]) if load.code == 0x20 && load.k == 0 && jeq.code == 0x15 => jeq.k,
        _ => panic!("seccompiler's program layout changed; cannot read the number of {name}"),
    }
}

fn render(policy: &Policy, program: &[bpf::Insn], target: &str) -> String {
    let mut out = String::new();
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    let mut conditional: Vec<u32> = policy.conditional.iter().map(|(n, _)| *n).collect();
    conditional.sort_unstable();
    let mut allow = policy.allow.clone();
    allow.sort_unstable();
    let _ = writeln!(out, "/// The filter compiled from `{PROFILE}` for {target}.");
    let _ = writeln!(out, "pub static FILTER: [libc::sock_filter; {}] = [", program.len());
    for i in program {
        let _ = writeln!(out, "    libc::sock_filter {{ code: {}, jt: {}, jf: {}, k: {} }},", i.code, i.jt, i.jf, i.k);
    }
    let _ = writeln!(out, "];");
    let _ = writeln!(out, "/// Numbers above this answer ENOSYS (the profile's `newest_known`).");
    let _ = writeln!(out, "pub const NEWEST_KNOWN: u32 = {};", policy.newest_known);
    let _ = writeln!(out, "#[cfg(test)]\nconst ALLOWED: &[u32] = &[{}];", list(&allow));
    let _ = writeln!(out, "#[cfg(test)]\nconst CONDITIONAL: &[u32] = &[{}];", list(&conditional));
    let _ = writeln!(out, "#[cfg(test)]\nconst ENOSYS_NRS: &[u32] = &[{}];", list(&policy.enosys));
    let _ = writeln!(out, "#[cfg(test)]\nconst NOTIFY_NRS: &[u32] = &[{}];", list(&policy.notify));
    let _ = writeln!(out, "#[cfg(test)]\nconst AUDIT_ARCH: u32 = {};", policy.audit_arch);
    out
}
