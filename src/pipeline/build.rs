//! Step 1 of the pipeline: release-build the function binaries with cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::image::Function;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot run cargo ({source}); install Rust (https://rustup.rs) or give the binary with --binary")]
    Cargo { source: std::io::Error },
    #[error("`{command}` failed ({status}); its output is above")]
    Failed { command: String, status: String },
    #[error("cargo metadata: {0}")]
    Metadata(String),
    #[error("cargo built, but {path} is not there")]
    NotBuilt { path: PathBuf },
}

/// The release binaries of the functions, built in the workspace at `root`.
#[derive(Debug, Clone)]
pub struct Built {
    pub release_dir: PathBuf,
}

impl Built {
    pub fn binary(&self, f: Function) -> PathBuf {
        self.release_dir.join(f.name())
    }
}

/// `cargo build --release --locked --workspace --bins` in `root`: the same command and
/// features as `make build`'s, so nothing is rebuilt twice. Cargo's output goes to the
/// terminal (it has its own progress).
pub fn build_functions(root: &Path) -> Result<Built, BuildError> {
    let args = ["build", "--release", "--locked", "--workspace", "--bins"];
    let status = Command::new(cargo())
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|source| BuildError::Cargo { source })?;
    if !status.success() {
        return Err(BuildError::Failed {
            command: format!("cargo {}", args.join(" ")),
            status: status.to_string(),
        });
    }
    let built = Built {
        release_dir: target_dir(root)?.join("release"),
    };
    for f in [Function::Predict, Function::Train] {
        let path = built.binary(f);
        if !path.is_file() {
            return Err(BuildError::NotBuilt { path });
        }
    }
    Ok(built)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Where cargo puts its output for the workspace at `root` (honours `CARGO_TARGET_DIR` and
/// `.cargo/config.toml`).
pub fn target_dir(root: &Path) -> Result<PathBuf, BuildError> {
    let out = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .current_dir(root)
        .output()
        .map_err(|source| BuildError::Cargo { source })?;
    if !out.status.success() {
        return Err(BuildError::Metadata(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| BuildError::Metadata(format!("unreadable output: {e}")))?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| BuildError::Metadata("no target_directory in its output".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_target_dir_of_this_workspace() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = target_dir(root).unwrap();
        // This test binary lives under it.
        let exe = std::env::current_exe().unwrap();
        assert!(
            exe.starts_with(&dir),
            "{} not under {}",
            exe.display(),
            dir.display()
        );
    }
}
