//! Scratch directories and freshly built example binaries for the suites
//! that run the real programs (`#[path]`-included where needed).
#![allow(dead_code)] // each suite uses part of it

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A directory of its own under the system's temporary directory, removed
/// when dropped.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    /// A new empty directory whose name starts with `pop3d-{label}`.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "pop3d-{label}-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Builds the example `name` with the profile and target directory these
/// tests were built with and returns its path, so a test never runs a
/// stale binary (`cargo test --test X` alone does not build examples).
/// Cargo puts examples next to the package's binaries. Callers keep the
/// result in a `OnceLock` to build once per test run.
pub fn build_example(name: &str) -> PathBuf {
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_pop3d")).parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let profile = match profile_dir.file_name().and_then(|dir| dir.to_str()) {
        Some("debug") | None => "dev",
        Some(dir) => dir,
    };
    let build = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", name, "--profile", profile])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "cargo build --example {name} failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let binary = profile_dir.join("examples").join(name);
    assert!(
        binary.is_file(),
        "{} is missing after building it; run `cargo build --example {name}`",
        binary.display()
    );
    binary
}
