//! Step 2: a function binary and what goes beside it, as an OCI image — the one way both
//! `deploy image` and `deploy all` assemble one.

use std::path::{Path, PathBuf};

use super::StageError;
use crate::arch::Arch;
use crate::image::{self, Function, Image, ImageInputs};
use crate::layer::LayerCache;

/// What goes into an image besides the binary.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Model weights for the predict image (the card beside it goes in too).
    pub weights: PathBuf,
    /// The four MNIST files for the train image.
    pub mnist_dir: PathBuf,
    /// PEM certificates the functions trust; default: this machine's bundle.
    pub ca_bundle: Option<PathBuf>,
    /// Every timestamp in the image (reproducible builds).
    pub source_date_epoch: u64,
    /// The cache of compressed layers; default: [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
}

/// `$XDG_CACHE_HOME/lambda-cnn/layers`, else `~/.cache/lambda-cnn/layers`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("lambda-cnn/layers")
}

/// The image of `f` around `binary`, from `sources`; `arch` must be the binary's when given.
pub fn containerize(
    f: Function,
    binary: PathBuf,
    arch: Option<Arch>,
    sources: &Sources,
) -> Result<Image, StageError> {
    let inputs = ImageInputs {
        function: f,
        binary,
        arch,
        weights: Some(sources.weights.clone()),
        mnist_dir: Some(sources.mnist_dir.clone()),
        ca_bundle: sources.ca_bundle.clone(),
        source_date_epoch: sources.source_date_epoch,
    };
    let cache = LayerCache::new(sources.cache_dir.clone().unwrap_or_else(default_cache_dir));
    image::assemble(&inputs, &cache).map_err(|source| StageError::Assemble {
        function: f,
        source: Box::new(source),
    })
}

/// Writes `img` as an OCI layout in `dir` under `tag`.
pub fn write(img: &Image, dir: &Path, tag: &str) -> Result<ImageMade, StageError> {
    image::write_layout(img, dir, tag).map_err(|source| StageError::WriteLayout {
        path: dir.to_owned(),
        source: Box::new(source),
    })?;
    Ok(ImageMade {
        function: img.function,
        digest: img.manifest_digest.clone(),
        compressed_size: img.compressed_size(),
        layout: dir.to_owned(),
    })
}

/// `bytes` as people read an image's size: `12.3 MB`.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// An image written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageMade {
    /// Whose.
    pub function: Function,
    /// Its manifest digest.
    #[serde(rename = "manifest_digest")]
    pub digest: String,
    /// Its layers' compressed bytes.
    pub compressed_size: u64,
    /// The OCI layout's directory.
    pub layout: PathBuf,
}

impl std::fmt::Display for ImageMade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} image: {} ({} compressed)",
            self.function,
            self.digest,
            mb(self.compressed_size)
        )
    }
}
