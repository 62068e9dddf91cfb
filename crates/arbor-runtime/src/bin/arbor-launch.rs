//! `arbor-launch`: reads a [`arbor_runtime::LaunchSpec`] as JSON on stdin,
//! starts the sandbox, and reports envd's host pid (with the sandbox's
//! seccomp listener, over the unix socket that is its stdout); `arbor-launch restore`
//! does the same from a [`arbor_runtime::RestoreSpec`] (a checkpoint).
//! Executed by [`arbor_runtime::linux::LinuxDriver`]; not meant to be run by
//! hand.

use std::{io::Read, os::fd::AsFd};

fn parse<T: serde::de::DeserializeOwned>(input: &str) -> T {
    match serde_json::from_str(input) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("arbor-launch: invalid spec: {e}");
            std::process::exit(2);
        }
    }
}

fn main() {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("arbor-launch: reading the spec: {e}");
        std::process::exit(2);
    }
    let result = match std::env::args().nth(1).as_deref() {
        Some("restore") => arbor_runtime::linux::restore::run(&parse(&input)).map(|pid| (pid, None)),
        None => arbor_runtime::linux::launch::run(&parse(&input)).map(|(pid, listener)| (pid, Some(listener))),
        Some(other) => {
            eprintln!("arbor-launch: unknown mode {other:?}");
            std::process::exit(2);
        }
    };
    // stdout is a unix socket of the driver's: the pid goes with the
    // sandbox's seccomp listener (a restored sandbox has none).
    let reported = result.and_then(|(pid, listener)| {
        let stdout = std::io::stdout();
        arbor_runtime::linux::report(stdout.as_fd(), pid, listener.as_ref().map(|l| l.as_fd()))
    });
    match reported {
        Ok(()) => {}
        Err(e) => {
            eprintln!("arbor-launch: {e}");
            std::process::exit(1);
        }
    }
}
