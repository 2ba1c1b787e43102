//! MNIST: the IDX reader, the four files with their checksums, and the in-memory data set.

#![warn(missing_docs)]

pub mod idx;
pub mod mnist;

pub use mnist::{load, load_split, Mnist, Split, SplitKind, FILES, IMAGE_PIXELS, IMAGE_SIDE};

/// Where MNIST is read from when neither `--mnist-dir` nor `MNIST_DIR` says: what `make data`
/// fills.
pub const DEFAULT_DIR: &str = "data/mnist";

/// `MNIST_DIR`, else [`DEFAULT_DIR`].
pub fn dir_from_env() -> std::path::PathBuf {
    std::env::var_os("MNIST_DIR").map_or_else(|| DEFAULT_DIR.into(), std::path::PathBuf::from)
}

use std::path::PathBuf;

/// Everything that can be wrong with the data files. Each variant names the file.
#[derive(Debug, thiserror::Error)]
// Error enums are documented by their messages: each says what went wrong and what to do.
#[allow(missing_docs)]
pub enum DataError {
    #[error("{name} not found in {dir} (looked for {name}.gz and {name}); set --mnist-dir or MNIST_DIR to the folder holding the four MNIST IDX files, or run `make data` to download them")]
    Missing { dir: PathBuf, name: String },
    #[error("cannot read {path}: {cause}")]
    Io {
        path: PathBuf,
        // Shown in the message rather than as `source()`, so a printed chain of causes does
        // not repeat it.
        cause: std::io::Error,
    },
    #[error("{path} is not a valid gzip file ({cause}); download it again")]
    Gzip {
        path: PathBuf,
        // Shown in the message rather than as `source()`, so a printed chain of causes does
        // not repeat it.
        cause: std::io::Error,
    },
    #[error("{path} has magic number {found:#010x}, expected {expected:#010x}: not the IDX file it is named after")]
    BadMagic {
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    #[error("{path} is truncated: its {what} needs {expected} bytes, the file has {found}")]
    Truncated {
        path: PathBuf,
        expected: usize,
        found: usize,
        what: &'static str,
    },
    #[error("{path} has the wrong shape: {message}")]
    BadShape { path: PathBuf, message: String },
    #[error("{path} has SHA-256 {actual} after decompression, expected {expected}: the file is corrupt or not the standard MNIST set; download it again")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}
