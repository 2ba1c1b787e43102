//! What the image needs to know about a function binary: its CPU architecture and whether it
//! asks for a dynamic loader (and which). Read from the ELF headers, never guessed from the
//! host.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};

pub use crate::arch::Arch;

/// Why a file is not a function binary Lambda can run.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their messages
pub enum BinaryError {
    #[error("cannot read the function binary {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a 64-bit ELF executable ({reason}); give the Linux binary of a function"
    )]
    NotElf { path: PathBuf, reason: String },
    #[error("{path} is built for ELF machine {machine}, which Lambda does not run (x86_64 or arm64 only)")]
    UnsupportedMachine { path: PathBuf, machine: u16 },
}

/// Facts about one function binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryInfo {
    /// The architecture it is built for (its ELF machine).
    pub arch: Arch,
    /// The dynamic loader it names (`PT_INTERP`), or `None` for a static binary.
    pub interpreter: Option<String>,
}

/// Reads the ELF header and program headers of `path`.
pub fn inspect(path: &Path) -> Result<BinaryInfo, BinaryError> {
    let data = std::fs::read(path).map_err(|source| BinaryError::Read {
        path: path.to_owned(),
        source,
    })?;
    inspect_bytes(&data).map_err(|e| match e {
        Inspect::NotElf(reason) => BinaryError::NotElf {
            path: path.to_owned(),
            reason,
        },
        Inspect::Machine(machine) => BinaryError::UnsupportedMachine {
            path: path.to_owned(),
            machine,
        },
    })
}

enum Inspect {
    NotElf(String),
    Machine(u16),
}

fn inspect_bytes(data: &[u8]) -> Result<BinaryInfo, Inspect> {
    let not_elf = |e: object::read::Error| Inspect::NotElf(e.to_string());
    let header = elf::FileHeader64::<object::Endianness>::parse(data).map_err(not_elf)?;
    let endian = header.endian().map_err(not_elf)?;
    let arch = match header.e_machine(endian) {
        elf::EM_X86_64 => Arch::X86_64,
        elf::EM_AARCH64 => Arch::Arm64,
        other => return Err(Inspect::Machine(other.0)),
    };
    let mut interpreter = None;
    for ph in header.program_headers(endian, data).map_err(not_elf)? {
        if let Some(bytes) = ph.interpreter(endian, data).map_err(not_elf)? {
            interpreter = Some(String::from_utf8_lossy(bytes).into_owned());
        }
    }
    Ok(BinaryInfo { arch, interpreter })
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// A minimal ELF header for `machine` with no program headers: a static binary, as far as
    /// the image builder cares.
    pub(crate) fn fake_elf(machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2; // 64-bit
        h[5] = 1; // little endian
        h[6] = 1; // version
        h[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        h[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        h
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::fake_elf;
    use super::*;

    #[test]
    fn reads_this_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let info = inspect(&exe).unwrap();
        assert_eq!(Some(info.arch), Arch::host());
        // Test binaries link glibc dynamically here.
        let interp = info.interpreter.expect("a dynamic loader");
        assert!(
            interp.starts_with('/') && interp.contains("ld-"),
            "{interp}"
        );
    }

    #[test]
    fn refuses_what_is_not_an_elf_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootstrap");
        std::fs::write(&path, b"#!/bin/sh\necho hi\n").unwrap();
        let err = inspect(&path).unwrap_err().to_string();
        assert!(err.contains("not a 64-bit ELF"), "{err}");
    }

    #[test]
    fn names_the_architecture_from_the_header() {
        let info = inspect_bytes(&fake_elf(183)).ok().unwrap();
        assert_eq!(info.arch, Arch::Arm64);
        assert_eq!(info.interpreter, None);
        assert!(matches!(
            inspect_bytes(&fake_elf(40)),
            Err(Inspect::Machine(40))
        ));
    }
}
