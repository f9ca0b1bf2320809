//! Building plugin libraries for tests, shared by `tests/plugins.rs` and
//! `tests/plugins_e2e.rs`: a scratch directory, C plugins compiled against
//! the SDK's header, and the Rust plugin crates built as `.so` files.
//! `tests/common/mod.rs` uses [`build_plugin_crates`] for
//! `POP3D_TEST_PLUGINS=so`.
#![allow(dead_code)] // each suite uses part of it

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The repository root.
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A scratch directory removed when the test ends. Loaded libraries stay
/// mapped; removing their files is harmless.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pop3d-plugin-tests-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Compiles one C file of `plugins/examples` into a shared library, as
/// strictly as a plugin author should (warnings are errors), against the
/// SDK's header.
pub fn build_c(dir: &Scratch, source: &str, library: &str, defines: &[&str]) -> PathBuf {
    let output = dir.path(library);
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let result = Command::new(&compiler)
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-shared",
            "-fPIC",
        ])
        .arg(format!("-I{REPO}/plugins/api/include"))
        .args(defines.iter().map(|define| format!("-D{define}")))
        .arg("-o")
        .arg(&output)
        .arg(Path::new(REPO).join("plugins/examples").join(source))
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{compiler}`: {e}"));
    assert!(
        result.status.success(),
        "compiling {source} failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    output
}

/// Builds the Rust plugin `crates` as shared libraries with the profile of
/// this test binary (so `cargo test --release` tests release plugins) and
/// returns the directory the `.so` files are in.
pub fn build_plugin_crates(crates: &[&str]) -> PathBuf {
    // This binary is <target>/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    // A target directory of their own: built alone, the plugin crates get
    // other features of shared dependencies (serde) than in the workspace
    // build, and rebuilding them in place would overwrite rlibs that pop3d's
    // tests and doctests link against.
    let libs_target = profile_dir.parent().unwrap().join("plugin-libs");
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev".to_string(),
        other => other.to_string(),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "--profile", &profile]);
    for name in crates {
        command.args(["-p", name]);
    }
    let status = command
        .arg("--target-dir")
        .arg(&libs_target)
        .current_dir(REPO)
        .status()
        .expect("cannot run cargo to build the plugin libraries");
    assert!(status.success(), "building the plugin libraries failed");
    libs_target.join(profile_dir.file_name().unwrap())
}

/// Builds the Rust plugin crates (once per test binary) and returns the
/// path of `lib<name>.so`.
pub fn rust_plugin(library: &str) -> PathBuf {
    static LIBS_DIR: OnceLock<PathBuf> = OnceLock::new();
    let libs_dir = LIBS_DIR
        .get_or_init(|| build_plugin_crates(&["pop3d-maildir", "dir-store", "panicky-store"]));
    let path = libs_dir.join(library);
    assert!(path.exists(), "{} was not built", path.display());
    path
}
