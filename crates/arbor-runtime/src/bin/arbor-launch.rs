//! `arbor-launch`: reads a [`arbor_runtime::LaunchSpec`] as JSON on stdin,
//! starts the sandbox, and prints envd's host pid; `arbor-launch restore`
//! does the same from a [`arbor_runtime::RestoreSpec`] (a checkpoint).
//! Executed by [`arbor_runtime::linux::LinuxDriver`]; not meant to be run by
//! hand.

use std::io::Read;

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
        Some("restore") => arbor_runtime::linux::restore::run(&parse(&input)),
        None => arbor_runtime::linux::launch::run(&parse(&input)),
        Some(other) => {
            eprintln!("arbor-launch: unknown mode {other:?}");
            std::process::exit(2);
        }
    };
    match result {
        Ok(pid) => println!("{pid}"),
        Err(e) => {
            eprintln!("arbor-launch: {e}");
            std::process::exit(1);
        }
    }
}
