//! Records what is built for `/api/v1/status/buildinfo` and `metronome_build_info`: the
//! git commit and branch, the commit's date and the compiler (`METRONOME_BUILD_*`, read by
//! `src/main.rs` with `env!`). Outside a git checkout (a source tarball) the git fields
//! are `unknown`.
//!
//! It lives in the binary's crate, the smallest that needs it, and reruns only when
//! `HEAD` or the branch it names moves: a commit rebuilds `src/main.rs` and relinks,
//! nothing else.
// A build script runs on the build machine, outside the runtime the project's rules are
// for: it runs `git`, `date` and `rustc` directly. It reads no clock.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git")
            .args(args)
            // Commit dates in UTC, whatever the build machine's zone.
            .env("TZ", "UTC")
            .current_dir(&manifest_dir)
            .output()
            .ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        let text = text.trim();
        (output.status.success() && !text.is_empty()).then(|| text.to_string())
    };
    let revision = git(&["rev-parse", "HEAD"]);
    let branch = git(&["rev-parse", "--abbrev-ref", "HEAD"]);
    if revision.is_some() {
        watch_head(&manifest_dir, &git);
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let toolchain = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty());
    let unknown = || "unknown".to_string();
    println!(
        "cargo:rustc-env=METRONOME_BUILD_REVISION={}",
        revision.unwrap_or_else(unknown)
    );
    println!(
        "cargo:rustc-env=METRONOME_BUILD_BRANCH={}",
        branch.unwrap_or_else(unknown)
    );
    println!(
        "cargo:rustc-env=METRONOME_BUILD_TOOLCHAIN={}",
        toolchain.unwrap_or_else(unknown)
    );
    println!("cargo:rustc-env=METRONOME_BUILD_DATE={}", build_date(&git));
}

/// Reruns this script when `HEAD` changes (a checkout) or the branch it names moves (a
/// commit): the loose ref file, or `packed-refs` for a packed one. In a worktree `HEAD`
/// is the worktree's and the refs are the repository's.
fn watch_head(manifest_dir: &Path, git: &dyn Fn(&[&str]) -> Option<String>) {
    let absolute = |path: String| {
        let path = PathBuf::from(path);
        if path.is_absolute() {
            path
        } else {
            manifest_dir.join(path)
        }
    };
    let (Some(git_dir), Some(common_dir)) = (
        git(&["rev-parse", "--git-dir"]).map(absolute),
        git(&["rev-parse", "--git-common-dir"]).map(absolute),
    ) else {
        return;
    };
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        // A path that does not exist would rerun the script on every build: a packed ref
        // is watched in `packed-refs`, and in its directory, where a commit writes it
        // loose.
        let loose = common_dir.join(&reference);
        let packed = common_dir.join("packed-refs");
        if loose.exists() {
            println!("cargo:rerun-if-changed={}", loose.display());
        } else if let Some(directory) = loose.parent().filter(|dir| dir.exists()) {
            println!("cargo:rerun-if-changed={}", directory.display());
        }
        if packed.exists() {
            println!("cargo:rerun-if-changed={}", packed.display());
        }
    }
}

/// The build's date, reproducibly: `SOURCE_DATE_EPOCH` when set, else the date of the
/// commit being built (the same commit builds the same binary, and the script reads no
/// clock), as RFC 3339 in UTC; `unknown` outside a git checkout.
fn build_date(git: &dyn Fn(&[&str]) -> Option<String>) -> String {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    const FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";
    let from_epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .filter(|text| text.parse::<u64>().is_ok())
        .and_then(|seconds| {
            let output = Command::new("date")
                .args(["-u", "-d", &format!("@{seconds}"), &format!("+{FORMAT}")])
                .output()
                .ok()?;
            let text = String::from_utf8(output.stdout).ok()?;
            output.status.success().then(|| text.trim().to_string())
        });
    from_epoch
        .or_else(|| {
            git(&[
                "-c",
                "log.showSignature=false",
                "log",
                "-1",
                "--format=%cd",
                &format!("--date=format-local:{FORMAT}"),
            ])
        })
        .unwrap_or_else(|| "unknown".to_string())
}
