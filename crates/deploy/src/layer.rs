//! Reproducible image layers: a tar of the given files with sorted entries, one fixed mtime,
//! uid/gid 0 and fixed modes, gzipped at a fixed level. The same files give the same bytes, so
//! the same digest, on any machine and any day.
//!
//! Compressed layers are kept in a cache keyed by the digest of the uncompressed tar (the
//! layer's `diff_id`): a layer whose content did not change is read back, not compressed again.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Fixed so that digests do not depend on flate2's default.
pub const GZIP_LEVEL: u32 = 6;

/// Why a layer could not be built.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their messages
pub enum LayerError {
    #[error("cannot read {path} for layer {layer:?}: {source}")]
    Read {
        layer: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write layer {layer:?}: {source}")]
    Write {
        layer: String,
        source: std::io::Error,
    },
    #[error("layer cache {dir}: {source}")]
    Cache {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{path:?} is not a valid path inside an image (absolute, no `..`, no empty parts)")]
    BadPath { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { source: Source, mode: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// The files of one layer, by absolute path inside the image. Parent directories are added
/// for every file (mode 0755), so a layer unpacks the same with any tool.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// What the layer holds, for people ("system: loader, shared libraries, CA bundle").
    pub name: String,
    entries: BTreeMap<String, Entry>,
}

impl LayerSpec {
    /// An empty layer named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        LayerSpec {
            name: name.into(),
            entries: BTreeMap::new(),
        }
    }

    /// An empty directory (a mount point such as `/tmp`).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self, LayerError> {
        let rel = relative(path)?;
        self.parents(&rel);
        self.entries.insert(rel, Entry::Dir { mode });
        Ok(self)
    }

    /// A file whose bytes are read from `source` on this machine (symlinks followed).
    pub fn file(&mut self, path: &str, source: &Path, mode: u32) -> Result<&mut Self, LayerError> {
        self.insert(path, Source::Path(source.to_owned()), mode)
    }

    /// A file with these bytes.
    pub fn bytes(
        &mut self,
        path: &str,
        bytes: Vec<u8>,
        mode: u32,
    ) -> Result<&mut Self, LayerError> {
        self.insert(path, Source::Bytes(bytes), mode)
    }

    fn insert(&mut self, path: &str, source: Source, mode: u32) -> Result<&mut Self, LayerError> {
        let rel = relative(path)?;
        self.parents(&rel);
        self.entries.insert(rel, Entry::File { source, mode });
        Ok(self)
    }

    fn parents(&mut self, rel: &str) {
        let mut end = 0;
        while let Some(i) = rel[end..].find('/') {
            end += i;
            self.entries
                .entry(rel[..end].to_owned())
                .or_insert(Entry::Dir { mode: 0o755 });
            end += 1;
        }
    }

    /// The uncompressed tar, entries in byte order of their paths.
    pub fn tar(&self, mtime: u64) -> Result<Vec<u8>, LayerError> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_ustar();
            header.set_mtime(mtime);
            header.set_uid(0);
            header.set_gid(0);
            let write_err = |source| LayerError::Write {
                layer: self.name.clone(),
                source,
            };
            match entry {
                Entry::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, format!("{path}/"), std::io::empty())
                        .map_err(write_err)?;
                }
                Entry::File { source, mode } => {
                    let bytes = match source {
                        Source::Bytes(b) => std::borrow::Cow::Borrowed(b.as_slice()),
                        Source::Path(p) => {
                            std::borrow::Cow::Owned(std::fs::read(p).map_err(|source| {
                                LayerError::Read {
                                    layer: self.name.clone(),
                                    path: p.clone(),
                                    source,
                                }
                            })?)
                        }
                    };
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(bytes.len() as u64);
                    builder
                        .append_data(&mut header, path, bytes.as_ref())
                        .map_err(write_err)?;
                }
            }
        }
        builder.into_inner().map_err(|source| LayerError::Write {
            layer: self.name.clone(),
            source,
        })
    }
}

/// `/var/runtime/bootstrap` → `var/runtime/bootstrap`, refusing anything that could escape
/// the root or name the same entry two ways.
fn relative(path: &str) -> Result<String, LayerError> {
    let bad = || LayerError::BadPath {
        path: path.to_owned(),
    };
    let rel = path.strip_prefix('/').ok_or_else(bad)?;
    let rel = rel.strip_suffix('/').unwrap_or(rel);
    if rel.is_empty()
        || rel
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(bad());
    }
    Ok(rel.to_owned())
}

/// A built layer: its compressed blob in the cache, and the figures the manifest and config
/// need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The spec's name.
    pub name: String,
    /// `sha256:…` of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// `sha256:…` of the gzipped blob (the manifest's layer digest).
    pub digest: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// Uncompressed size in bytes.
    pub uncompressed_size: u64,
    /// The compressed blob's file in the cache.
    pub blob: PathBuf,
    /// True when the compressed blob came from the cache.
    pub cached: bool,
}

/// Compressed layers by `diff_id`, in one directory.
#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    /// The cache in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LayerCache { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Builds `spec` at `mtime`: tars it, and compresses it unless the cache has it.
    pub fn build(&self, spec: &LayerSpec, mtime: u64) -> Result<Layer, LayerError> {
        let tar = spec.tar(mtime)?;
        let diff_hex = hex::encode(Sha256::digest(&tar));
        let cache_err = |source| LayerError::Cache {
            dir: self.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(cache_err)?;
        let blob = self.dir.join(format!("{diff_hex}.tar.gz"));
        // A cached blob is hashed again: cheap next to compressing, and a damaged cache entry
        // cannot slip into an image (it is rebuilt instead).
        let layer = |gz: &[u8], blob: PathBuf, cached: bool| Layer {
            name: spec.name.clone(),
            diff_id: format!("sha256:{diff_hex}"),
            digest: format!("sha256:{}", hex::encode(Sha256::digest(gz))),
            size: gz.len() as u64,
            uncompressed_size: tar.len() as u64,
            blob,
            cached,
        };
        if let Ok(gz) = std::fs::read(&blob) {
            if gunzip_digest(&gz).as_deref() == Some(diff_hex.as_str()) {
                return Ok(layer(&gz, blob, true));
            }
        }
        let gz = gzip(&tar).map_err(|source| LayerError::Write {
            layer: spec.name.clone(),
            source,
        })?;
        // Written aside then renamed, so a crash never leaves a half blob under the real name.
        let tmp = self
            .dir
            .join(format!("{diff_hex}.tar.gz.{}.part", std::process::id()));
        std::fs::write(&tmp, &gz).map_err(cache_err)?;
        std::fs::rename(&tmp, &blob).map_err(cache_err)?;
        Ok(layer(&gz, blob, false))
    }
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    // mtime 0 and no file name in the gzip header: nothing of this machine or moment.
    let mut enc = flate2::GzBuilder::new().mtime(0).write(
        Vec::with_capacity(data.len() / 2),
        flate2::Compression::new(GZIP_LEVEL),
    );
    enc.write_all(data)?;
    enc.finish()
}

/// The hex sha256 of the decompressed `gz`, or None when it does not decompress.
fn gunzip_digest(gz: &[u8]) -> Option<String> {
    let mut hasher = Sha256::new();
    let mut dec = flate2::read::GzDecoder::new(gz);
    std::io::copy(&mut dec, &mut hasher).ok()?;
    Some(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LayerSpec {
        let mut s = LayerSpec::new("test");
        s.bytes("/var/runtime/bootstrap", b"\x7fELF binary".to_vec(), 0o755)
            .unwrap()
            .bytes("/etc/ssl/certs/ca.crt", b"cert".to_vec(), 0o644)
            .unwrap()
            .dir("/tmp", 0o1777)
            .unwrap();
        s
    }

    #[test]
    fn entries_are_sorted_with_parents_fixed_owner_and_mtime() {
        let tar = spec().tar(1_700_000_000).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 1_700_000_000);
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            seen.push((
                e.path().unwrap().to_string_lossy().into_owned(),
                h.mode().unwrap(),
            ));
        }
        let expected = [
            ("etc/", 0o755),
            ("etc/ssl/", 0o755),
            ("etc/ssl/certs/", 0o755),
            ("etc/ssl/certs/ca.crt", 0o644),
            ("tmp/", 0o1777),
            ("var/", 0o755),
            ("var/runtime/", 0o755),
            ("var/runtime/bootstrap", 0o755),
        ];
        let seen: Vec<(&str, u32)> = seen.iter().map(|(p, m)| (p.as_str(), *m)).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn same_files_give_the_same_digest_and_a_change_changes_it() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let la = LayerCache::new(a.path()).build(&spec(), 0).unwrap();
        let lb = LayerCache::new(b.path()).build(&spec(), 0).unwrap();
        assert_eq!((&la.digest, &la.diff_id), (&lb.digest, &lb.diff_id));
        let later = LayerCache::new(b.path()).build(&spec(), 1).unwrap();
        assert_ne!(later.digest, la.digest, "the mtime is part of the layer");
        let mut changed = spec();
        changed
            .bytes("/var/runtime/bootstrap", b"other".to_vec(), 0o755)
            .unwrap();
        let lc = LayerCache::new(a.path()).build(&changed, 0).unwrap();
        assert_ne!(lc.digest, la.digest);
    }

    #[test]
    fn an_unchanged_layer_comes_from_the_cache_and_a_damaged_one_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(dir.path());
        let first = cache.build(&spec(), 0).unwrap();
        assert!(!first.cached);
        let second = cache.build(&spec(), 0).unwrap();
        assert!(second.cached);
        assert_eq!(first.digest, second.digest);
        std::fs::write(&first.blob, b"garbage").unwrap();
        let third = cache.build(&spec(), 0).unwrap();
        assert!(!third.cached);
        assert_eq!(third.digest, first.digest);
    }

    #[test]
    fn refuses_paths_that_escape_the_root() {
        let mut s = LayerSpec::new("bad");
        for p in ["relative/file", "/a/../etc/passwd", "/a//b", "/"] {
            let err = s.bytes(p, vec![], 0o644).unwrap_err();
            assert!(matches!(err, LayerError::BadPath { .. }), "{p}: {err}");
        }
    }
}
