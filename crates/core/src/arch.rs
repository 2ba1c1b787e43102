//! The two CPU architectures Lambda runs, under Lambda's names.

#![warn(missing_docs)]

use std::fmt;
use std::str::FromStr;

/// The CPU this runs on, as the kernel names it (`model name` in /proc/cpuinfo; on arm64,
/// where there is none, the implementer and part numbers), so that a measured figure can say
/// which machine it is of: figures from different machines here differ by 4× and more.
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    field("model name")
        .or_else(|| {
            Some(format!(
                "CPU implementer {} part {}",
                field("CPU implementer")?,
                field("CPU part")?
            ))
        })
        .unwrap_or_else(|| format!("an unnamed {} CPU", std::env::consts::ARCH))
}

/// A CPU architecture Lambda runs functions on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86-64 (Lambda's default).
    X86_64,
    /// AArch64, on Graviton (20 % less per GB-second).
    Arm64,
}

impl Arch {
    /// The architecture of the machine running this code.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The name Lambda's API uses (`Architectures`).
    pub fn lambda_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.lambda_name())
    }
}

impl serde::Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.lambda_name())
    }
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            other => Err(format!(
                "unknown architecture {other:?}: Lambda runs x86_64 or arm64"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings() {
        assert_eq!("amd64".parse::<Arch>().unwrap(), Arch::X86_64);
        assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Arm64);
        assert!("riscv64"
            .parse::<Arch>()
            .unwrap_err()
            .contains("x86_64 or arm64"));
    }
}
