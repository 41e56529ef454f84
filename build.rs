//! Records what is built for `/api/v1/status/buildinfo` and `metronome_build_info`: the
//! git commit and branch, the build date and the compiler (`METRONOME_BUILD_*`, read by
//! `src/main.rs` with `env!`). Outside a git checkout (a source tarball) the git fields
//! are `unknown`.
//!
//! It lives in the binary's crate, the smallest that needs it, and reruns only when
//! `HEAD` or the branch it names moves: a commit rebuilds `src/main.rs` and relinks,
//! nothing else.
// A build script runs on the build machine, outside the runtime the project's rules are
// for: it runs `git` and `rustc` and reads the clock directly.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git")
            .args(args)
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
    println!("cargo:rustc-env=METRONOME_BUILD_DATE={}", build_date());
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

/// Now, or `SOURCE_DATE_EPOCH` for a reproducible build, as RFC 3339 in UTC.
fn build_date() -> String {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs())
        });
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
