//! `arbor-launch`: reads a [`arbor_runtime::LaunchSpec`] as JSON on stdin,
//! starts the sandbox, and prints envd's host pid. Executed by
//! [`arbor_runtime::linux::LinuxDriver`]; not meant to be run by hand.

use std::io::Read;

fn main() {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("arbor-launch: reading the spec: {e}");
        std::process::exit(2);
    }
    let spec: arbor_runtime::LaunchSpec = match serde_json::from_str(&input) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("arbor-launch: invalid spec: {e}");
            std::process::exit(2);
        }
    };
    match arbor_runtime::linux::launch::run(&spec) {
        Ok(pid) => println!("{pid}"),
        Err(e) => {
            eprintln!("arbor-launch: {e}");
            std::process::exit(1);
        }
    }
}
