//! The IDX container format MNIST is distributed in: a big-endian magic number whose third
//! byte is the element type (0x08 = u8) and fourth the number of dimensions, then one
//! big-endian u32 per dimension, then the elements.

use super::DataError;
use std::path::Path;

/// An IDX file of unsigned bytes, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxU8 {
    /// The size of each dimension, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// The magic number of an IDX file of u8 elements with `ndim` dimensions.
pub const fn magic_u8(ndim: u8) -> u32 {
    0x0000_0800 | ndim as u32
}

/// Parses `bytes` (already decompressed) as an IDX file of u8 with exactly `ndim` dimensions,
/// keeping its buffer for the elements (the training images are 47 MB: one copy is enough).
/// `path` only names the file in errors.
pub fn parse_u8(path: &Path, mut bytes: Vec<u8>, ndim: u8) -> Result<IdxU8, DataError> {
    let header_len = 4 + 4 * ndim as usize;
    let truncated = |expected: usize, what| DataError::Truncated {
        path: path.to_owned(),
        expected,
        found: bytes.len(),
        what,
    };
    if bytes.len() < 4 {
        return Err(truncated(4, "magic number"));
    }
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let magic = be(0);
    if magic != magic_u8(ndim) {
        return Err(DataError::BadMagic {
            path: path.to_owned(),
            expected: magic_u8(ndim),
            found: magic,
        });
    }
    if bytes.len() < header_len {
        return Err(truncated(header_len, "header"));
    }
    let dims: Vec<usize> = (0..ndim as usize).map(|d| be(4 + 4 * d) as usize).collect();
    let count = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let expected = count
        .and_then(|c| c.checked_add(header_len))
        .ok_or_else(|| DataError::BadShape {
            path: path.to_owned(),
            message: format!("dimensions {dims:?} overflow"),
        })?;
    if bytes.len() != expected {
        return Err(if bytes.len() < expected {
            truncated(expected, "data")
        } else {
            DataError::BadShape {
                path: path.to_owned(),
                message: format!(
                    "{} trailing bytes after the {expected} the header announces",
                    bytes.len() - expected
                ),
            }
        });
    }
    bytes.drain(..header_len);
    Ok(IdxU8 { dims, data: bytes })
}

/// Encodes u8 elements as an IDX file; used to write test fixtures and by tests of the parser.
pub fn encode_u8(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&magic_u8(dims.len() as u8).to_be_bytes());
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x-idx3-ubyte")
    }

    #[test]
    fn round_trips_a_small_file() {
        let bytes = encode_u8(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let idx = parse_u8(p(), bytes.clone(), 3).unwrap();
        assert_eq!(idx.dims, vec![2, 2, 3]);
        assert_eq!(idx.data, (1..=12).collect::<Vec<u8>>());
    }

    #[test]
    fn rejects_wrong_magic_and_wrong_rank() {
        let bytes = encode_u8(&[2], &[1, 2]);
        let err = parse_u8(p(), bytes.clone(), 3).unwrap_err();
        assert!(
            matches!(err, DataError::BadMagic { found: 0x801, .. }),
            "{err}"
        );
        let mut bytes = encode_u8(&[2], &[1, 2]);
        bytes[2] = 0x0D; // float elements
        assert!(matches!(
            parse_u8(p(), bytes.clone(), 1),
            Err(DataError::BadMagic { .. })
        ));
    }

    #[test]
    fn rejects_truncated_header_and_data() {
        let bytes = encode_u8(&[3, 2], &[0; 6]);
        let err = parse_u8(p(), bytes[..7].to_vec(), 2).unwrap_err();
        assert!(
            matches!(err, DataError::Truncated { what: "header", .. }),
            "{err}"
        );
        let err = parse_u8(p(), bytes[..bytes.len() - 1].to_vec(), 2).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 18,
                    found: 17,
                    what: "data",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("x-idx3-ubyte"), "{err}");
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut bytes = encode_u8(&[2], &[1, 2]);
        bytes.push(0);
        assert!(matches!(
            parse_u8(p(), bytes.clone(), 1),
            Err(DataError::BadShape { .. })
        ));
    }
}
