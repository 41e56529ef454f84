//! Runs the flatc that flatc-fork built, with this program's arguments.

use std::process::{exit, Command};

fn main() {
    let status = Command::new(flatc_fork::flatc())
        .args(std::env::args_os().skip(1))
        .status()
        .unwrap_or_else(|error| {
            eprintln!("cannot run {}: {error}", flatc_fork::flatc().display());
            exit(2)
        });
    exit(status.code().unwrap_or(2));
}
