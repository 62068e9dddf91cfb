//! Command-line options and the kernel commands they configure.

use crate::kernel::KernelSpec;
use crate::language::{KernelFamily, Language};
use clap::Parser;
use jupyter_protocol::Transport;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Command-line options (each also settable through its environment variable).
#[derive(Debug, Parser)]
#[command(name = "arbor-interpreter", about = "Code-interpreter server backed by Jupyter kernels")]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "ARBOR_INTERPRETER_LISTEN", default_value = "0.0.0.0:49999")]
    pub listen: SocketAddr,
    /// Working directory of contexts created without one.
    #[arg(long, env = "ARBOR_INTERPRETER_CWD", default_value = "/home/user")]
    pub cwd: PathBuf,
    /// Where kernels' connection files and ipc sockets live (one directory
    /// per kernel; keep the path short: unix socket paths max out at 107 bytes).
    #[arg(long, env = "ARBOR_INTERPRETER_RUN_DIR", default_value = "/tmp/arbor-interpreter")]
    pub run_dir: PathBuf,
    /// Python kernel command, split on whitespace; the connection file's path
    /// is appended. The program is looked up in PATH.
    #[arg(long, env = "ARBOR_INTERPRETER_PYTHON_KERNEL", default_value = "python3 -m ipykernel_launcher -f")]
    pub python_kernel: String,
    /// JavaScript and TypeScript kernel command (Deno's Jupyter kernel, tcp only).
    #[arg(long, env = "ARBOR_INTERPRETER_DENO_KERNEL", default_value = "deno jupyter --kernel --conn")]
    pub deno_kernel: String,
    /// Bash kernel command.
    #[arg(long, env = "ARBOR_INTERPRETER_BASH_KERNEL", default_value = "python3 -m bash_kernel -f")]
    pub bash_kernel: String,
    /// R kernel command (IRkernel, tcp: it builds its endpoints as `transport://ip:port`).
    #[arg(long, env = "ARBOR_INTERPRETER_R_KERNEL", default_value = "R --slave -e IRkernel::main() --args")]
    pub r_kernel: String,
    /// Languages whose default context is started before `/health` answers
    /// (so a template's memory snapshot holds their kernels), comma-separated.
    #[arg(long, env = "ARBOR_INTERPRETER_EAGER", default_value = "python,javascript", value_delimiter = ',')]
    pub eager: Vec<String>,
    /// envd's address, asked to check access tokens (`GET /envs`); `none` turns
    /// token checks off (for tests outside a sandbox).
    #[arg(long, env = "ARBOR_INTERPRETER_ENVD_URL", default_value = "http://127.0.0.1:49983")]
    pub envd_url: String,
    /// Seconds between keepalive lines on a silent execution.
    #[arg(long, env = "ARBOR_INTERPRETER_KEEPALIVE_SECS", default_value_t = 30)]
    pub keepalive_secs: u64,
}

impl Args {
    /// envd's URL, unless token checks are off.
    pub fn envd(&self) -> Option<String> {
        let url = self.envd_url.trim();
        (!url.is_empty() && url != "none").then(|| url.to_string())
    }

    /// The keepalive interval.
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs.max(1))
    }

    /// The kernel spec of every language whose program is found; the others
    /// are reported and left out.
    pub async fn specs(&self) -> HashMap<Language, KernelSpec> {
        let mut specs = HashMap::new();
        for language in crate::language::ALL {
            // ipc where the kernel takes it (no ports to allocate, nothing
            // reachable from the network); Deno's kernel refuses ipc ("invalid host").
            let (command, transport) = match language.family() {
                KernelFamily::IPython => (&self.python_kernel, Transport::IPC),
                KernelFamily::Deno => (&self.deno_kernel, Transport::TCP),
                KernelFamily::Bash => (&self.bash_kernel, Transport::IPC),
                KernelFamily::R => (&self.r_kernel, Transport::TCP),
            };
            let argv: Vec<String> = command.split_whitespace().map(str::to_string).collect();
            match resolve(&argv).await {
                Ok(argv) => {
                    specs.insert(language, KernelSpec { argv, transport, family: language.family() });
                }
                Err(why) => tracing::warn!("{language} unavailable: {why}"),
            }
        }
        specs
    }
}

/// Finds the program in PATH and, for `python -m <module>` commands, checks
/// the module is installed (cheaply, without importing it).
async fn resolve(argv: &[String]) -> Result<Vec<String>, String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let path = find_program(program).ok_or_else(|| format!("{program} not found in PATH"))?;
    if let [flag, module, ..] = args {
        if flag == "-m" {
            let check = format!("import importlib.util, sys; sys.exit(importlib.util.find_spec({module:?}) is None)");
            let found = tokio::process::Command::new(&path)
                .args(["-c", &check])
                .stdin(std::process::Stdio::null())
                .status()
                .await
                .map_err(|e| format!("running {}: {e}", path.display()))?;
            if !found.success() {
                return Err(format!("python module {module} is not installed for {}", path.display()));
            }
        }
    }
    let mut out = vec![path.to_string_lossy().into_owned()];
    out.extend(args.iter().cloned());
    Ok(out)
}

/// `program` itself if it holds a `/`, else the first executable match in PATH.
fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return is_executable(Path::new(program)).then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_in_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("/bin/sh").is_some());
        assert!(find_program("no-such-program-arbor").is_none());
    }

    #[tokio::test]
    async fn missing_python_modules_are_reported() {
        let argv: Vec<String> = ["python3", "-m", "no_such_module_arbor", "-f"].map(String::from).to_vec();
        if find_program("python3").is_some() {
            assert!(resolve(&argv).await.is_err_and(|e| e.contains("no_such_module_arbor")));
        }
    }
}
