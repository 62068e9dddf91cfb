//! Lays out the sandbox's seccomp policy as a classic BPF program (used by
//! build.rs; plain std so it builds anywhere).
//!
//! Why not seccompiler's own output: it tests the system call number
//! against every allowed call in turn. When a filter is installed, the
//! kernel runs it once per system call number to find the ones it may
//! allow without running it again, so a 300-call chain costs about a
//! millisecond per sandbox. Here the numbers are sorted into chunks of
//! [`CHUNK`], a short ladder of range checks picks the chunk, and each
//! chunk tests its own few numbers: any number is decided in a few dozen
//! instructions.

/// One instruction, as in `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// How an argument is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    MaskedEq(u64),
}

/// One argument test; `qword` compares all 64 bits, otherwise the low 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub arg: u8,
    pub qword: bool,
    pub op: Op,
    pub value: u64,
}

/// What the program decides.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `AUDIT_ARCH_*` of the target; any other ABI is killed.
    pub audit_arch: u32,
    /// Allowed whatever the arguments.
    pub allow: Vec<u32>,
    /// Allowed when any of the condition lists holds (all of its tests).
    pub conditional: Vec<(u32, Vec<Vec<Cond>>)>,
    /// Answer `ENOSYS`, as do all numbers above `newest_known`.
    pub enosys: Vec<u32>,
    /// Go to the supervisor (`SECCOMP_RET_USER_NOTIF`), whatever the arguments.
    pub notify: Vec<u32>,
    pub newest_known: u32,
    /// The errno of everything else.
    pub errno: u32,
}

/// Numbers tested by one chunk.
pub const CHUNK: usize = 16;

// Classic BPF encodings (linux/bpf_common.h) and seccomp return values.
/// BPF_LD (0) | BPF_W (0) | BPF_ABS.
const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x04 | 0x50;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x05 | 0x10;
const JMP_JGT_K: u16 = 0x05 | 0x20;
const JMP_JGE_K: u16 = 0x05 | 0x30;
const RET_K: u16 = 0x06;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// BPF_MAXINSNS: the longest program the kernel takes.
const MAX_INSNS: usize = 4096;
const ENOSYS: u32 = 38;
// Offsets in `struct seccomp_data` (little-endian: an argument's low word first).
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARGS: u32 = 16;

type Label = usize;

enum Item {
    Stmt(u16, u32),
    /// A conditional jump; `None` is the next instruction.
    Jump(u16, u32, Option<Label>, Option<Label>),
    Ja(Label),
    Here(Label),
}

#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        self.labels - 1
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.items.push(Item::Stmt(code, k));
    }
    fn jump(&mut self, code: u16, k: u32, jt: Option<Label>, jf: Option<Label>) {
        self.items.push(Item::Jump(code, k, jt, jf));
    }
    fn ja(&mut self, to: Label) {
        self.items.push(Item::Ja(to));
    }
    fn here(&mut self, l: Label) {
        self.items.push(Item::Here(l));
    }

    fn finish(self) -> Result<Vec<Insn>, String> {
        let mut at = vec![usize::MAX; self.labels];
        let mut pc = 0;
        for item in &self.items {
            match item {
                Item::Here(l) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        if pc > MAX_INSNS {
            return Err(format!("{pc} instructions, more than the kernel's {MAX_INSNS}"));
        }
        if let Some(l) = at.iter().position(|&a| a == usize::MAX) {
            return Err(format!("label {l} is never placed"));
        }
        let mut out = Vec::with_capacity(pc);
        for item in &self.items {
            let pc = out.len();
            let off = |l: &Label| at[*l].checked_sub(pc + 1).ok_or(format!("label {l} is behind {pc}"));
            let short = |l: &Option<Label>| match l {
                None => Ok(0),
                Some(l) => off(l).and_then(|o| u8::try_from(o).map_err(|_| format!("jump of {o} at {pc}"))),
            };
            out.push(match item {
                Item::Here(_) => continue,
                Item::Stmt(code, k) => Insn { code: *code, jt: 0, jf: 0, k: *k },
                Item::Jump(code, k, jt, jf) => Insn { code: *code, jt: short(jt)?, jf: short(jf)?, k: *k },
                Item::Ja(l) => {
                    Insn { code: JMP_JA, jt: 0, jf: 0, k: u32::try_from(off(l)?).map_err(|e| e.to_string())? }
                }
            });
        }
        Ok(out)
    }
}

/// Emits one rule's tests: falls through when all hold, jumps to `fail`
/// on the first that does not.
fn conditions(asm: &mut Asm, conds: &[Cond], fail: Label) {
    for c in conds {
        let lo = ARGS + 8 * u32::from(c.arg);
        let hi = lo + 4;
        let (v_hi, v_lo) = ((c.value >> 32) as u32, c.value as u32);
        match c.op {
            Op::Eq => {
                if c.qword {
                    asm.stmt(LD_W_ABS, hi);
                    asm.jump(JMP_JEQ_K, v_hi, None, Some(fail));
                }
                asm.stmt(LD_W_ABS, lo);
                asm.jump(JMP_JEQ_K, v_lo, None, Some(fail));
            }
            Op::Ne => {
                let pass = asm.label();
                if c.qword {
                    asm.stmt(LD_W_ABS, hi);
                    asm.jump(JMP_JEQ_K, v_hi, None, Some(pass));
                }
                asm.stmt(LD_W_ABS, lo);
                asm.jump(JMP_JEQ_K, v_lo, Some(fail), None);
                asm.here(pass);
            }
            Op::MaskedEq(mask) => {
                let (m_hi, m_lo) = ((mask >> 32) as u32, mask as u32);
                if c.qword {
                    asm.stmt(LD_W_ABS, hi);
                    asm.stmt(ALU_AND_K, m_hi);
                    asm.jump(JMP_JEQ_K, v_hi & m_hi, None, Some(fail));
                }
                asm.stmt(LD_W_ABS, lo);
                asm.stmt(ALU_AND_K, m_lo);
                asm.jump(JMP_JEQ_K, v_lo & m_lo, None, Some(fail));
            }
        }
    }
}

/// The program for `policy`.
pub fn assemble(policy: &Policy) -> Result<Vec<Insn>, String> {
    let mut asm = Asm::default();
    let enosys = asm.label();
    let deny = RET_ERRNO | (policy.errno & 0xffff);

    asm.stmt(LD_W_ABS, ARCH);
    let arch_ok = asm.label();
    asm.jump(JMP_JEQ_K, policy.audit_arch, Some(arch_ok), None);
    asm.stmt(RET_K, RET_KILL_PROCESS);
    asm.here(arch_ok);
    asm.stmt(LD_W_ABS, NR);
    for nr in &policy.enosys {
        let next = asm.label();
        asm.jump(JMP_JEQ_K, *nr, None, Some(next));
        asm.ja(enosys);
        asm.here(next);
    }
    for nr in &policy.notify {
        let next = asm.label();
        asm.jump(JMP_JEQ_K, *nr, None, Some(next));
        asm.stmt(RET_K, RET_USER_NOTIF);
        asm.here(next);
    }
    let known = asm.label();
    asm.jump(JMP_JGT_K, policy.newest_known, None, Some(known));
    asm.ja(enosys);
    asm.here(known);

    // Every number the program knows, sorted, each with its rules (empty = always).
    let mut calls: Vec<(u32, &[Vec<Cond>])> = policy.allow.iter().map(|nr| (*nr, &[][..])).collect();
    calls.extend(policy.conditional.iter().map(|(nr, rules)| (*nr, &rules[..])));
    calls.sort_by_key(|c| c.0);
    if calls.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err("a system call is listed twice".into());
    }
    let chunks: Vec<_> = calls.chunks(CHUNK).map(|c| (c, asm.label())).collect();
    // The ladder: from the highest chunk down, the first whose start the
    // number reaches. Below the first chunk's start nothing is allowed.
    for (chunk, label) in chunks.iter().rev() {
        let lower = asm.label();
        asm.jump(JMP_JGE_K, chunk[0].0, None, Some(lower));
        asm.ja(*label);
        asm.here(lower);
    }
    asm.stmt(RET_K, deny);
    for (chunk, label) in &chunks {
        asm.here(*label);
        let allow = asm.label();
        // Calls with conditions jump to their own block of rules.
        let blocks: Vec<_> = chunk.iter().map(|(nr, rules)| (*nr, *rules, asm.label())).collect();
        for (nr, rules, block) in &blocks {
            asm.jump(JMP_JEQ_K, *nr, Some(if rules.is_empty() { allow } else { *block }), None);
        }
        asm.stmt(RET_K, deny);
        for (_, rules, block) in &blocks {
            // Unconditional calls get an empty block, which is just a label.
            asm.here(*block);
            if rules.is_empty() {
                continue;
            }
            for rule in rules.iter() {
                let next = asm.label();
                conditions(&mut asm, rule, next);
                asm.ja(allow);
                asm.here(next);
            }
            asm.stmt(RET_K, deny);
        }
        asm.here(allow);
        asm.stmt(RET_K, RET_ALLOW);
    }
    asm.here(enosys);
    asm.stmt(RET_K, RET_ERRNO | ENOSYS);
    asm.finish()
}
