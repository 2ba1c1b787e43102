//! The shared libraries a dynamically linked binary needs, found by asking its own dynamic
//! loader (`ld.so --list`), so the image carries exactly what the loader would map, wherever
//! this distribution keeps it.
//!
//! A binary for the other architecture (arm64 cross-built on x86_64, or the reverse) gets the
//! same treatment from that architecture's loader and libraries: the cross sysroot Debian's
//! `libc6-dev-<arch>-cross` installs (`/usr/aarch64-linux-gnu`, or `LAMBDA_CNN_SYSROOT`), its
//! loader run under qemu-user with the sysroot as its root. The image then carries the
//! sysroot's files — never the host's.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::binary::{Arch, BinaryInfo};

/// One file to carry: where the loader looks for it, and where its bytes are on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedLib {
    /// Absolute path inside the image (the path the loader resolved, or the `PT_INTERP` path).
    pub image_path: String,
    /// Where its bytes are on this machine (in the sysroot for a foreign binary).
    pub host_path: PathBuf,
}

/// Why a binary's libraries could not be resolved.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their messages
pub enum LibsError {
    #[error(
        "{binary} is a dynamically linked {arch} binary and this machine is {host}: its shared \
         libraries come from the {arch} sysroot {sysroot}, which {why}; install the cross \
         libc and qemu-user (`make cross-tools`, or apt-get install {packages}), set \
         LAMBDA_CNN_SYSROOT to another {arch} root, or give a statically linked binary with \
         --binary"
    )]
    Foreign {
        binary: PathBuf,
        arch: Arch,
        host: String,
        sysroot: PathBuf,
        why: String,
        packages: &'static str,
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

/// Where a foreign binary's loader and libraries are found, and the emulator that runs the
/// loader: the defaults of Debian's cross packages for `arch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysroot {
    /// The root the binary's absolute library paths are read under.
    pub root: PathBuf,
    /// qemu-user for `arch` (statically linked: it needs nothing from the sysroot).
    pub qemu: String,
}

impl Sysroot {
    /// `LAMBDA_CNN_SYSROOT` if set, else `/usr/<gnu-arch>-linux-gnu`.
    pub fn for_arch(arch: Arch) -> Sysroot {
        let gnu = gnu_name(arch);
        Sysroot {
            root: std::env::var_os("LAMBDA_CNN_SYSROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("/usr/{gnu}-linux-gnu"))),
            qemu: format!("qemu-{gnu}-static"),
        }
    }

    /// Where a path inside the image is on this machine.
    fn host_path(&self, image_path: &str) -> PathBuf {
        self.root.join(image_path.trim_start_matches('/'))
    }
}

/// The architecture's name in GNU triples (`aarch64-linux-gnu`).
pub(crate) fn gnu_name(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64",
        Arch::Arm64 => "aarch64",
    }
}

/// The loader plus every library it maps for `binary`; empty for a static binary.
pub fn resolve(binary: &Path, info: &BinaryInfo) -> Result<Vec<SharedLib>, LibsError> {
    if Arch::host() == Some(info.arch) {
        resolve_with(binary, info, None)
    } else {
        resolve_with(binary, info, Some(&Sysroot::for_arch(info.arch)))
    }
}

/// [`resolve`], with the loader run natively (`sysroot` None) or under qemu in `sysroot`.
pub fn resolve_with(
    binary: &Path,
    info: &BinaryInfo,
    sysroot: Option<&Sysroot>,
) -> Result<Vec<SharedLib>, LibsError> {
    let Some(loader) = &info.interpreter else {
        return Ok(Vec::new());
    };
    let mut command = match sysroot {
        None => Command::new(loader),
        Some(root) => {
            let foreign = |why: String| LibsError::Foreign {
                binary: binary.to_owned(),
                arch: info.arch,
                host: std::env::consts::ARCH.to_owned(),
                sysroot: root.root.clone(),
                why,
                packages: match info.arch {
                    Arch::Arm64 => "gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static",
                    Arch::X86_64 => "gcc-x86-64-linux-gnu libc6-dev-amd64-cross qemu-user-static",
                },
            };
            let host_loader = root.host_path(loader);
            if !host_loader.is_file() {
                return Err(foreign(format!(
                    "lacks its loader {}",
                    host_loader.display()
                )));
            }
            let mut c = Command::new(&root.qemu);
            c.arg("-L").arg(&root.root).arg(host_loader);
            // Fail here with what to install, not later with a bare "No such file".
            if let Err(e) = Command::new(&root.qemu).arg("-version").output() {
                return Err(foreign(format!(
                    "cannot be used: {} does not run ({e})",
                    root.qemu
                )));
            }
            c
        }
    };
    // The host's own search settings must not leak into what the image gets.
    let out = command
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
    // Under qemu the listed paths are the loader's view: its files are in the sysroot.
    if let Some(root) = sysroot {
        for lib in &mut libs {
            lib.host_path = root.host_path(&lib.image_path);
            if !lib.host_path.is_file() {
                return Err(LibsError::NotFound {
                    binary: binary.to_owned(),
                    lib: format!("{} (not in {})", lib.image_path, root.root.display()),
                });
            }
        }
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
        // The loader lists itself bare, or (run by another path, as under qemu) as
        // `/lib/ld-….so.1 => <the path it was run as>`: either way it goes where the binary
        // names it.
        let image_path = if (name.is_empty() || name.starts_with('/')) && is_loader(path, loader) {
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
    fn parses_the_listing_of_a_loader_run_under_qemu_from_its_sysroot() {
        let text = "\t (0x0000005502850000)\n\
            \tlibgcc_s.so.1 => /lib/libgcc_s.so.1 (0x00000055036a0000)\n\
            \tlibc.so.6 => /lib/libc.so.6 (0x0000005503780000)\n\
            \t/lib/ld-linux-aarch64.so.1 => /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 (0x55)\n";
        let libs = parse_list(text, "/lib/ld-linux-aarch64.so.1").unwrap();
        let paths: Vec<&str> = libs.iter().map(|l| l.image_path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/lib/libgcc_s.so.1",
                "/lib/libc.so.6",
                "/lib/ld-linux-aarch64.so.1"
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
    fn a_foreign_binary_without_its_sysroot_is_refused_with_what_to_do() {
        let info = BinaryInfo {
            arch: Arch::Arm64,
            interpreter: Some("/lib/ld-linux-aarch64.so.1".into()),
        };
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot {
            root: dir.path().to_owned(),
            qemu: "qemu-aarch64-static".into(),
        };
        let err = resolve_with(Path::new("bootstrap"), &info, Some(&root))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lacks its loader")
                && err.contains("libc6-dev-arm64-cross")
                && err.contains("LAMBDA_CNN_SYSROOT")
                && err.contains("statically linked"),
            "{err}"
        );
        // The loader is there but the emulator is not.
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("lib/ld-linux-aarch64.so.1"), b"").unwrap();
        let root = Sysroot {
            qemu: "qemu-that-is-not-installed".into(),
            ..root
        };
        let err = resolve_with(Path::new("bootstrap"), &info, Some(&root))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("qemu-that-is-not-installed does not run"),
            "{err}"
        );
    }

    #[test]
    fn the_default_sysroot_is_debians_cross_root() {
        if std::env::var_os("LAMBDA_CNN_SYSROOT").is_none() {
            let root = Sysroot::for_arch(Arch::Arm64);
            assert_eq!(root.root, Path::new("/usr/aarch64-linux-gnu"));
            assert_eq!(root.qemu, "qemu-aarch64-static");
            assert_eq!(
                root.host_path("/lib/libc.so.6"),
                Path::new("/usr/aarch64-linux-gnu/lib/libc.so.6")
            );
        }
    }
}
