//! The four standard MNIST files, checked against their published SHA-256 sums, held once
//! in memory as raw bytes (47 MB for the training set) and scaled to [0, 1] a batch at a time.

use super::{idx, DataError};
use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The width and height of an MNIST image.
pub const IMAGE_SIDE: usize = 28;
/// The pixels of an MNIST image (784).
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;

/// One of the four files: its name, the SHA-256 of its decompressed bytes and the shape it has.
#[derive(Debug, Clone, Copy)]
pub struct FileSpec {
    /// The file's name, without `.gz`.
    pub name: &'static str,
    /// The published SHA-256 of its decompressed bytes, hex.
    pub sha256: &'static str,
    /// The shape its IDX header must give.
    pub dims: &'static [usize],
}

const TRAIN_IMAGES: FileSpec = FileSpec {
    name: "train-images-idx3-ubyte",
    sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    dims: &[60_000, IMAGE_SIDE, IMAGE_SIDE],
};
const TRAIN_LABELS: FileSpec = FileSpec {
    name: "train-labels-idx1-ubyte",
    sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    dims: &[60_000],
};
const TEST_IMAGES: FileSpec = FileSpec {
    name: "t10k-images-idx3-ubyte",
    sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    dims: &[10_000, IMAGE_SIDE, IMAGE_SIDE],
};
const TEST_LABELS: FileSpec = FileSpec {
    name: "t10k-labels-idx1-ubyte",
    sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    dims: &[10_000],
};

/// All four files, as `make data` downloads them and the model card records them.
pub const FILES: [FileSpec; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

/// Which of MNIST's two splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// The 60,000 training images.
    Train,
    /// The 10,000 test images.
    Test,
}

impl SplitKind {
    fn files(self) -> (FileSpec, FileSpec) {
        match self {
            SplitKind::Train => (TRAIN_IMAGES, TRAIN_LABELS),
            SplitKind::Test => (TEST_IMAGES, TEST_LABELS),
        }
    }
}

/// Images and labels of one split. Pixels stay as the file's bytes (0..=255, white digit on
/// black); the model scales them when it builds a batch, so the set is held once.
#[derive(Debug, Clone)]
pub struct Split {
    /// The images, 784 bytes each, one after the other.
    pub images: Vec<u8>,
    /// The digit (0..=9) of each image.
    pub labels: Vec<u8>,
}

impl Split {
    /// How many images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The 784 pixels of image `i`, row-major.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS]
    }
}

/// Both splits, checked.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// The training split.
    pub train: Split,
    /// The test split.
    pub test: Split,
}

/// Loads and checks all four files from `dir`.
pub fn load(dir: &Path) -> Result<Mnist, DataError> {
    Ok(Mnist {
        train: load_split(dir, SplitKind::Train)?,
        test: load_split(dir, SplitKind::Test)?,
    })
}

/// Loads and checks the two files of one split from `dir`.
pub fn load_split(dir: &Path, kind: SplitKind) -> Result<Split, DataError> {
    let (images_spec, labels_spec) = kind.files();
    let images = read_checked(dir, images_spec)?;
    let labels = read_checked(dir, labels_spec)?;
    if let Some(bad) = labels.iter().position(|&l| l > 9) {
        return Err(DataError::BadShape {
            path: dir.join(labels_spec.name),
            message: format!("label {} at index {bad} is not a digit", labels[bad]),
        });
    }
    Ok(Split { images, labels })
}

/// Reads `spec` from `dir` (`NAME.gz` if present, else `NAME`), parses it, checks its shape
/// and its checksum, and returns the elements.
fn read_checked(dir: &Path, spec: FileSpec) -> Result<Vec<u8>, DataError> {
    let (path, bytes) = read_maybe_gz(dir, spec.name)?;
    // The sum covers the whole file; a malformed file is reported as such before a bad sum.
    let actual = hex::encode(Sha256::digest(&bytes));
    let parsed = idx::parse_u8(&path, bytes, spec.dims.len() as u8)?;
    if parsed.dims != spec.dims {
        return Err(DataError::BadShape {
            path,
            message: format!("dimensions {:?}, expected {:?}", parsed.dims, spec.dims),
        });
    }
    if actual != spec.sha256 {
        return Err(DataError::Checksum {
            path,
            expected: spec.sha256.to_owned(),
            actual,
        });
    }
    Ok(parsed.data)
}

/// Where file `name` is in `dir`: `NAME.gz` if present, else `NAME`; `None` when neither is.
pub fn locate(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(format!("{name}.gz")), dir.join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

fn read_maybe_gz(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>), DataError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |cause| DataError::Io { path, cause }
    };
    match locate(dir, name) {
        Some(gz) if gz.extension().is_some_and(|e| e == "gz") => {
            let file = std::fs::File::open(&gz).map_err(io(&gz))?;
            let mut bytes = Vec::new();
            GzDecoder::new(std::io::BufReader::new(file))
                .read_to_end(&mut bytes)
                .map_err(|cause| DataError::Gzip {
                    path: gz.clone(),
                    cause,
                })?;
            Ok((gz, bytes))
        }
        Some(raw) => {
            let bytes = std::fs::read(&raw).map_err(io(&raw))?;
            Ok((raw, bytes))
        }
        None => Err(DataError::Missing {
            dir: dir.to_owned(),
            name: name.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    fn write_gz(path: &Path, bytes: &[u8]) {
        let mut enc = GzEncoder::new(std::fs::File::create(path).unwrap(), Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap();
    }

    #[test]
    fn missing_file_names_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_split(dir.path(), SplitKind::Test).unwrap_err();
        assert!(
            matches!(err, DataError::Missing { ref name, .. } if name == "t10k-images-idx3-ubyte")
        );
        let msg = err.to_string();
        assert!(
            msg.contains("t10k-images-idx3-ubyte") && msg.contains("MNIST_DIR"),
            "{msg}"
        );
    }

    #[test]
    fn bad_magic_is_reported_for_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A labels file where the images file should be.
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte"),
            idx::encode_u8(&[3], &[1, 2, 3]),
        )
        .unwrap();
        let err = load_split(dir.path(), SplitKind::Test).unwrap_err();
        assert!(matches!(err, DataError::BadMagic { .. }), "{err}");
        assert!(err.to_string().contains("t10k-images-idx3-ubyte"));
    }

    #[test]
    fn truncated_gzip_is_a_gzip_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t10k-labels-idx1-ubyte.gz");
        write_gz(&path, &idx::encode_u8(&[10_000], &[0; 10_000]));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_checked(dir.path(), TEST_LABELS).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    }

    #[test]
    fn truncated_raw_file_says_how_short_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx::encode_u8(&[10_000], &[0; 10_000]);
        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), &bytes[..5000]).unwrap();
        let err = read_checked(dir.path(), TEST_LABELS).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 10_008,
                    found: 5000,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn wrong_count_is_a_shape_error() {
        let dir = tempfile::tempdir().unwrap();
        write_gz(
            &dir.path().join("t10k-labels-idx1-ubyte.gz"),
            &idx::encode_u8(&[9_999], &[0; 9_999]),
        );
        let err = read_checked(dir.path(), TEST_LABELS).unwrap_err();
        assert!(matches!(err, DataError::BadShape { .. }), "{err}");
    }

    #[test]
    fn well_formed_but_different_data_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        write_gz(
            &dir.path().join("t10k-labels-idx1-ubyte.gz"),
            &idx::encode_u8(&[10_000], &[3; 10_000]),
        );
        let err = read_checked(dir.path(), TEST_LABELS).unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains("ff7bcfd4"), "{err}");
    }
}
