//! The shared libraries a dynamically linked binary needs, found by asking its own dynamic
//! loader (`ld.so --list`), so the image carries exactly what the loader would map, wherever
//! this distribution keeps it.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::binary::{Arch, BinaryInfo};

/// One file to carry: where the loader looks for it, and where its bytes are on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedLib {
    /// Absolute path inside the image (the path the loader resolved, or the `PT_INTERP` path).
    pub image_path: String,
    pub host_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LibsError {
    #[error(
        "{binary} is a dynamically linked {arch} binary and this machine is {host}: its shared \
         libraries cannot be resolved here; give a statically linked binary (e.g. built for \
         {arch}-unknown-linux-musl) with --binary"
    )]
    Foreign {
        binary: PathBuf,
        arch: Arch,
        host: String,
    },
    #[error("cannot run the dynamic loader {loader} on {binary}: {source}")]
    Loader {
        loader: String,
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("the dynamic loader {loader} could not list the libraries of {binary}: {stderr}")]
    List {
        loader: String,
        binary: PathBuf,
        stderr: String,
    },
    #[error("{binary} needs {lib}, which is not installed on this machine")]
    NotFound { binary: PathBuf, lib: String },
}

/// The loader plus every library it maps for `binary`; empty for a static binary.
pub fn resolve(binary: &Path, info: &BinaryInfo) -> Result<Vec<SharedLib>, LibsError> {
    let Some(loader) = &info.interpreter else {
        return Ok(Vec::new());
    };
    if Arch::host() != Some(info.arch) {
        return Err(LibsError::Foreign {
            binary: binary.to_owned(),
            arch: info.arch,
            host: std::env::consts::ARCH.to_owned(),
        });
    }
    // The host's own search settings must not leak into what the image gets.
    let out = Command::new(loader)
        .arg("--list")
        .arg(binary)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LD_PRELOAD")
        .output()
        .map_err(|source| LibsError::Loader {
            loader: loader.clone(),
            binary: binary.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(LibsError::List {
            loader: loader.clone(),
            binary: binary.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let mut libs = parse_list(&String::from_utf8_lossy(&out.stdout), loader).map_err(|lib| {
        LibsError::NotFound {
            binary: binary.to_owned(),
            lib,
        }
    })?;
    // The loader must be at the exact path the binary names, whatever else lists it.
    if !libs.iter().any(|l| l.image_path == *loader) {
        libs.push(SharedLib {
            image_path: loader.clone(),
            host_path: PathBuf::from(loader),
        });
    }
    libs.sort_by(|a, b| a.image_path.cmp(&b.image_path));
    libs.dedup_by(|a, b| a.image_path == b.image_path);
    Ok(libs)
}

/// Parses `ld.so --list` output. Lines look like
/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)`, `/lib64/ld-linux-x86-64.so.2 (0x…)`
/// or `linux-vdso.so.1 (0x…)` (in the kernel: nothing to carry). Err names a missing library.
fn parse_list(text: &str, loader: &str) -> Result<Vec<SharedLib>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, rest) = match line.split_once("=>") {
            Some((name, rest)) => (name.trim(), rest.trim()),
            None => ("", line),
        };
        let path = rest.split(" (0x").next().unwrap_or(rest).trim();
        if path == "not found" {
            return Err(name.to_owned());
        }
        if !path.starts_with('/') {
            continue; // the vDSO
        }
        let image_path = if name.is_empty() && is_loader(path, loader) {
            loader.to_owned()
        } else {
            path.to_owned()
        };
        libs.push(SharedLib {
            image_path,
            host_path: PathBuf::from(path),
        });
    }
    Ok(libs)
}

fn is_loader(path: &str, loader: &str) -> bool {
    let file = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
    path == loader || file(path) == file(loader)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

    #[test]
    fn parses_the_loaders_listing() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd1d5f3000)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0d)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f0f)\n";
        let libs = parse_list(text, LOADER).unwrap();
        let paths: Vec<&str> = libs.iter().map(|l| l.image_path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                LOADER
            ]
        );
    }

    #[test]
    fn a_missing_library_is_named() {
        let text = "\tlibfoo.so.3 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n";
        assert_eq!(parse_list(text, LOADER).unwrap_err(), "libfoo.so.3");
    }

    #[test]
    fn resolves_this_test_binary_with_the_real_loader() {
        let exe = std::env::current_exe().unwrap();
        let info = super::super::binary::inspect(&exe).unwrap();
        let libs = resolve(&exe, &info).unwrap();
        let loader = info.interpreter.unwrap();
        assert!(libs.iter().any(|l| l.image_path == loader), "{libs:?}");
        assert!(
            libs.iter().any(|l| l.image_path.ends_with("/libc.so.6")),
            "{libs:?}"
        );
        assert!(libs.iter().all(|l| l.host_path.is_file()), "{libs:?}");
    }

    #[test]
    fn a_foreign_dynamic_binary_is_refused_with_what_to_do() {
        let foreign = match Arch::host() {
            Some(Arch::X86_64) => Arch::Arm64,
            _ => Arch::X86_64,
        };
        let info = BinaryInfo {
            arch: foreign,
            interpreter: Some("/lib/ld-linux-aarch64.so.1".into()),
        };
        let err = resolve(Path::new("bootstrap"), &info)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("statically linked") && err.contains("musl"),
            "{err}"
        );
    }
}
