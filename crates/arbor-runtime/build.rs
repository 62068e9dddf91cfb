//! Compiles the sandbox's seccomp allowlist (`seccomp/profile.json`) into
//! classic BPF for the target architecture, so that `arbor-launch` only
//! loads a static program (building it at launch costs ~150 µs).
//!
//! The profile names system calls; seccompiler's tables turn names into the
//! target's numbers. The profile is also compiled for the other supported
//! architecture, so a name missing there fails every build, not just that
//! architecture's.

use seccompiler::TargetArch;
use serde_json::{json, Value};
use std::{collections::BTreeSet, fmt::Write as _, path::PathBuf};

const PROFILE: &str = "seccomp/profile.json";
const ARCHES: [(&str, TargetArch); 2] = [("x86_64", TargetArch::x86_64), ("aarch64", TargetArch::aarch64)];

fn main() {
    println!("cargo::rerun-if-changed={PROFILE}");
    let text = std::fs::read_to_string(PROFILE).unwrap_or_else(|e| panic!("reading {PROFILE}: {e}"));
    let profile: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {PROFILE}: {e}"));
    let target = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let mut program = None;
    for (name, arch) in ARCHES {
        let bpf = compile(&profile, name, arch);
        if name == target {
            program = Some(bpf);
        }
    }
    let Some(program) = program else {
        panic!("arbor-runtime has a seccomp profile for x86_64 and aarch64, not for {target}");
    };
    let mut out = format!("/// The allowlist compiled from `{PROFILE}` for {target}.\n");
    let _ = writeln!(out, "pub static ALLOWLIST: [libc::sock_filter; {}] = [", program.len());
    for i in &program {
        let _ = writeln!(out, "    libc::sock_filter {{ code: {}, jt: {}, jf: {}, k: {} }},", i.code, i.jt, i.jf, i.k);
    }
    out.push_str("];\n");
    let dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    std::fs::write(dir.join("seccomp_allowlist.rs"), out).unwrap_or_else(|e| panic!("writing the allowlist: {e}"));
}

/// Expands the profile's entries into seccompiler's JSON for one
/// architecture and compiles it.
fn compile(profile: &Value, arch_name: &str, arch: TargetArch) -> seccompiler::BpfProgram {
    let mut rules = Vec::new();
    let (mut plain, mut conditional) = (BTreeSet::new(), BTreeSet::new());
    for entry in profile["allow"].as_array().unwrap_or_else(|| panic!("{PROFILE}: no \"allow\" list")) {
        if let Some(arches) = entry["arches"].as_array() {
            if !arches.iter().any(|a| a == arch_name) {
                continue;
            }
        }
        let args = &entry["args"];
        for name in entry["names"].as_array().unwrap_or_else(|| panic!("{PROFILE}: an entry has no names")) {
            let name = name.as_str().unwrap_or_else(|| panic!("{PROFILE}: {name} is not a string"));
            // seccompiler ORs the rules of one call: an unconditional entry
            // beside a conditional one would silently be narrowed to it.
            let unconditional = args.is_null();
            if unconditional && !plain.insert(name) {
                panic!("{PROFILE}: {name} is listed twice");
            }
            if !unconditional {
                conditional.insert(name);
            }
            if plain.contains(name) && conditional.contains(name) {
                panic!("{PROFILE}: {name} is allowed both always and under conditions");
            }
            rules.push(if args.is_null() { json!({"syscall": name}) } else { json!({"syscall": name, "args": args}) });
        }
    }
    let errno = profile["default_errno"].as_u64().unwrap_or_else(|| panic!("{PROFILE}: no default_errno"));
    let filter = json!({"sandbox": {"mismatch_action": {"errno": errno}, "match_action": "allow", "filter": rules}});
    let mut map = seccompiler::compile_from_json(filter.to_string().as_bytes(), arch)
        .unwrap_or_else(|e| panic!("{PROFILE} for {arch_name}: {e}"));
    map.remove("sandbox").unwrap_or_else(|| panic!("seccompiler returned no filter"))
}
