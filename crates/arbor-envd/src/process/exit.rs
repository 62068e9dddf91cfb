//! Exit statuses, described the way upstream envd (Go's `ProcessState`)
//! describes them, because the SDKs show these strings to users.

use arbor_proto::process::process_event::EndEvent;
use nix::sys::wait::WaitStatus;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number; `core` if it dumped core.
    Signal { signo: i32, core: bool },
}

impl Exit {
    /// Interprets a `waitpid` status; `None` for stops and continues.
    pub fn from_wait(status: WaitStatus) -> Option<Self> {
        match status {
            WaitStatus::Exited(_, code) => Some(Exit::Code(code)),
            WaitStatus::Signaled(_, sig, core) => Some(Exit::Signal { signo: sig as i32, core }),
            _ => None,
        }
    }

    /// `exit status N` or `signal: killed`, as Go prints them.
    pub fn status(&self) -> String {
        match *self {
            Exit::Code(c) => format!("exit status {c}"),
            Exit::Signal { signo, core } => {
                format!("signal: {}{}", signal_name(signo), if core { " (core dumped)" } else { "" })
            }
        }
    }

    /// The end event of the process stream.
    pub fn end_event(&self) -> EndEvent {
        let (exit_code, exited) = match *self {
            Exit::Code(c) => (c, true),
            Exit::Signal { .. } => (-1, false),
        };
        let status = self.status();
        EndEvent { exit_code, exited, error: (exit_code != 0).then(|| status.clone()), status }
    }
}

/// Go's names for signals (`syscall.Signal.String()`).
fn signal_name(signo: i32) -> String {
    let name = match signo {
        libc::SIGHUP => "hangup",
        libc::SIGINT => "interrupt",
        libc::SIGQUIT => "quit",
        libc::SIGILL => "illegal instruction",
        libc::SIGTRAP => "trace/breakpoint trap",
        libc::SIGABRT => "aborted",
        libc::SIGBUS => "bus error",
        libc::SIGFPE => "floating point exception",
        libc::SIGKILL => "killed",
        libc::SIGUSR1 => "user defined signal 1",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGUSR2 => "user defined signal 2",
        libc::SIGPIPE => "broken pipe",
        libc::SIGALRM => "alarm clock",
        libc::SIGTERM => "terminated",
        libc::SIGXCPU => "CPU time limit exceeded",
        libc::SIGXFSZ => "file size limit exceeded",
        libc::SIGSYS => "bad system call",
        _ => return format!("signal {signo}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_like_go() {
        let ok = Exit::Code(0).end_event();
        assert_eq!((ok.exit_code, ok.exited, ok.status.as_str(), ok.error), (0, true, "exit status 0", None));
        let bad = Exit::Code(3).end_event();
        assert_eq!(bad.error.as_deref(), Some("exit status 3"));
        let killed = Exit::Signal { signo: libc::SIGKILL, core: false }.end_event();
        assert_eq!((killed.exit_code, killed.exited, killed.status.as_str()), (-1, false, "signal: killed"));
        assert_eq!(
            Exit::Signal { signo: libc::SIGSEGV, core: true }.status(),
            "signal: segmentation fault (core dumped)"
        );
        assert_eq!(Exit::Signal { signo: 40, core: false }.status(), "signal: signal 40");
    }
}
