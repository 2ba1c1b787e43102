//! Step 1 of the pipeline: release-build the function binaries with cargo, for this machine's
//! architecture or cross-compiled for the other one (arm64 on x86_64: Debian's aarch64 gcc
//! links, as `.cargo/config.toml` says).

#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::image::Function;
use crate::arch::Arch;

/// Why the functions could not be built.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their messages
pub enum BuildError {
    #[error("cannot run cargo ({source}); install Rust (https://rustup.rs) or give the binary with --binary")]
    Cargo { source: std::io::Error },
    #[error("`{command}` failed ({status}); its output is above")]
    Failed { command: String, status: String },
    #[error("cargo metadata: {0}")]
    Metadata(String),
    #[error("cargo built, but {path} is not there")]
    NotBuilt { path: PathBuf },
    #[error(
        "cannot cross-build for {arch} here: {missing}; run `make cross-tools` (or `rustup \
         target add {target}` and apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"
    )]
    NoCrossTools {
        arch: Arch,
        target: &'static str,
        missing: String,
    },
    #[error("cannot read the current directory: {0}")]
    NoCurrentDir(std::io::Error),
    #[error(
        "{} is not inside the lambda-cnn project: run deploy from the project, or give the \
         function binary with --binary",
        cwd.display()
    )]
    NotInProject { cwd: PathBuf },
}

/// The lambda-cnn workspace the current directory is in (its `Cargo.toml` beside
/// `functions/`): where the functions are built.
pub fn workspace_root() -> Result<PathBuf, BuildError> {
    let cwd = std::env::current_dir().map_err(BuildError::NoCurrentDir)?;
    cwd.ancestors()
        .find(|d| d.join("Cargo.toml").is_file() && d.join("functions").is_dir())
        .map(Path::to_path_buf)
        .ok_or(BuildError::NotInProject { cwd })
}

/// The Rust target a Lambda architecture is built for (glibc: what Lambda's hosts have and
/// what the image carries).
pub fn rust_target(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64-unknown-linux-gnu",
        Arch::Arm64 => "aarch64-unknown-linux-gnu",
    }
}

/// The release binaries of the functions, built in the workspace at `root`.
#[derive(Debug, Clone)]
pub struct Built {
    /// Cargo's release directory for the target (`…/release` or `…/<target>/release`).
    pub release_dir: PathBuf,
}

impl Built {
    /// The binary of function `f`.
    pub fn binary(&self, f: Function) -> PathBuf {
        self.release_dir.join(f.name())
    }
}

/// For this machine's architecture, `cargo build --release --locked --workspace --bins` in
/// `root`; for the other one, the two functions with `--target` (the same commands and
/// features as `make build` / `make build-arm64`, so nothing is rebuilt twice). Cargo's output
/// goes to stderr (it has its own progress).
pub fn build_functions(root: &Path, arch: Arch) -> Result<Built, BuildError> {
    let native = Arch::host() == Some(arch);
    let target = rust_target(arch);
    if !native {
        check_cross_tools(arch)?;
    }
    let args = cargo_args(arch);
    // Cargo's own output (and a wrapper's, such as sccache) goes to stderr: stdout is the
    // command's result, which `deploy build --json` keeps to one JSON object.
    let status = Command::new(cargo())
        .args(&args)
        .current_dir(root)
        .stdout(std::io::stderr())
        .status()
        .map_err(|source| BuildError::Cargo { source })?;
    if !status.success() {
        return Err(BuildError::Failed {
            command: format!("cargo {}", args.join(" ")),
            status: status.to_string(),
        });
    }
    let dir = target_dir(root)?;
    let built = Built {
        release_dir: if native {
            dir.join("release")
        } else {
            dir.join(target).join("release")
        },
    };
    for f in [Function::Predict, Function::Train] {
        let path = built.binary(f);
        if !path.is_file() {
            return Err(BuildError::NotBuilt { path });
        }
    }
    Ok(built)
}

/// The cargo arguments that build the functions for `arch`.
fn cargo_args(arch: Arch) -> Vec<&'static str> {
    let mut args = vec!["build", "--release", "--locked"];
    if Arch::host() == Some(arch) {
        args.extend(["--workspace", "--bins"]);
    } else {
        let target = rust_target(arch);
        args.extend([
            "--target",
            target,
            "-p",
            "lambda-cnn-predict",
            "-p",
            "lambda-cnn-train",
        ]);
    }
    args
}

/// The command [`build_functions`] runs, for `--dry-run`.
pub fn command_line(arch: Arch) -> String {
    format!("cargo {}", cargo_args(arch).join(" "))
}

/// The linker `.cargo/config.toml` names and the target's standard library, checked before
/// cargo runs so that the error says what to install rather than what failed to link.
fn check_cross_tools(arch: Arch) -> Result<(), BuildError> {
    let target = rust_target(arch);
    let linker = format!("{}-linux-gnu-gcc", super::libs::gnu_name(arch));
    let mut missing = Vec::new();
    if Command::new(&linker).arg("--version").output().is_err() {
        missing.push(format!("no linker {linker}"));
    }
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if let Some(sysroot) = sysroot.filter(|s| !s.is_empty()) {
        if !Path::new(&sysroot)
            .join("lib/rustlib")
            .join(target)
            .is_dir()
        {
            missing.push(format!("no Rust standard library for {target}"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(BuildError::NoCrossTools {
            arch,
            target,
            missing: missing.join(", "),
        })
    }
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
