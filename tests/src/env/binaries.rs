//! Where the `api` and `worker` binaries under test come from: built once per test process
//! with cargo (so a test never runs a stale binary), or taken as they are from `CE_BIN_DIR`
//! (the benchmark runs release builds that way).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// Where the `api` and `worker` binaries are: `CE_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`,
/// else `<workspace>/target/debug`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        // A relative target dir is relative to where cargo ran: the workspace, here.
        let dir = if dir.is_absolute() {
            dir
        } else {
            workspace_root().join(dir)
        };
        return dir.join("debug");
    }
    workspace_root().join("target").join("debug")
}

/// Builds the binaries once per test process (`cargo build --bins -p api -p worker`) so tests
/// never run stale ones, unless `CE_SKIP_BUILD=1`. Panics with cargo's output if it fails.
pub fn ensure_built() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        if std::env::var("CE_SKIP_BUILD").is_ok_and(|v| v == "1") {
            return Ok(());
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--bins", "-p", "api", "-p", "worker"])
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run cargo: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "cargo build --bins -p api -p worker failed with {}:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
