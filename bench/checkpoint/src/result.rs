//! What one side (runc or Arbor) measured at one memory size, as rows the
//! report puts side by side.

use crate::{mem::Usage, stats::Samples};
use std::collections::BTreeMap;

/// A measured step, the same for both sides where both have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Row {
    /// The pause call returns. runc: `runc checkpoint` (a full dump).
    PauseReturns,
    /// The sandbox's durable image is complete. runc: `runc checkpoint`.
    Durable,
    /// Freeze only, memory kept. runc: `runc pause` (cgroup freezer).
    Freeze,
    /// Thaw of a frozen sandbox until it answered its first command.
    /// runc: `runc resume` + first command.
    ThawFirst,
    /// The resume (restore from the image) call returns. runc: `runc restore --detach`.
    Restore,
    /// From the start of the resume until the first command answered.
    RestoreFirst,
    /// How long the origin is suspended for a clone. runc: `runc checkpoint --leave-running`.
    CloneSuspend,
    /// One clone of a running sandbox, until it answered its first command.
    Clone1,
    /// N clones at once, until all answered.
    CloneN,
}

impl Row {
    /// All rows in report order.
    pub const ALL: [Row; 9] = [
        Row::PauseReturns,
        Row::Durable,
        Row::Freeze,
        Row::ThawFirst,
        Row::Restore,
        Row::RestoreFirst,
        Row::CloneSuspend,
        Row::Clone1,
        Row::CloneN,
    ];

    /// The row's name in the report.
    pub fn label(self, clones: usize) -> String {
        match self {
            Row::PauseReturns => "pause returns".into(),
            Row::Durable => "pause → durable image written".into(),
            Row::Freeze => "freeze only (memory kept)".into(),
            Row::ThawFirst => "thaw → first command".into(),
            Row::Restore => "resume from the image returns".into(),
            Row::RestoreFirst => "resume from the image → first command".into(),
            Row::CloneSuspend => "clone: origin suspended".into(),
            Row::Clone1 => "1 clone of a running sandbox → answers".into(),
            Row::CloneN => format!("{clones} clones at once → all answer"),
        }
    }

    /// What runc does for this row.
    pub fn runc_means(self) -> &'static str {
        match self {
            Row::PauseReturns | Row::Durable => "`runc checkpoint`",
            Row::Freeze => "`runc pause`",
            Row::ThawFirst => "`runc resume` + command",
            Row::Restore => "`runc restore -d`",
            Row::RestoreFirst => "`runc restore -d` + command",
            Row::CloneSuspend => "`runc checkpoint --leave-running`",
            Row::Clone1 | Row::CloneN => "checkpoint `--leave-running`, copy upper, `runc restore -d` each",
        }
    }
}

/// One side's results at one memory size.
#[derive(Debug, Default)]
pub struct SizeResult {
    /// Latencies per row; a row the side did not measure is missing.
    pub rows: BTreeMap<Row, Samples>,
    /// Size of each durable image, in bytes.
    pub image_bytes: Vec<u64>,
    /// The origin's memory before it was cloned.
    pub mem_one: Option<Usage>,
    /// N idle clones' memory after a few seconds of quiet.
    pub mem_many: Option<Usage>,
}

impl SizeResult {
    /// Adds a sample to `row`.
    pub fn push(&mut self, row: Row, d: std::time::Duration) {
        self.rows.entry(row).or_default().push(d);
    }

    /// The median image size, in bytes.
    pub fn image_median(&self) -> Option<u64> {
        let mut v = self.image_bytes.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    }
}

/// How many cycles of each kind to run at one size.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Memory held by the filler, in MiB.
    pub size_mib: u64,
    /// Unmeasured cycles of each kind first.
    pub warmup: usize,
    /// Measured pause → resume (and freeze → thaw) cycles.
    pub runs: usize,
    /// Measured 1-clone and N-clone cycles.
    pub clone_runs: usize,
    /// Clones in the many-clones cycle (10 in the issue).
    pub clones: usize,
    /// Quiet before memory is read.
    pub settle: std::time::Duration,
    /// Run ksmd (same-page merging) before reading the clones' memory.
    pub ksm: bool,
}
