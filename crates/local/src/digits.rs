//! Real test digits for the local job: MNIST's test split (read and checked by the core), as
//! the pixel arrays the API takes and as the PNGs a user would store.

use anyhow::Context as _;
use lambda_cnn_core::data::mnist::{self, SplitKind, IMAGE_SIDE};
use std::path::Path;

/// The first `n` test digits: pixels (784, row-major) and label.
pub fn test_digits(mnist_dir: &Path, n: usize) -> anyhow::Result<Vec<(Vec<u8>, u8)>> {
    let split = mnist::load_split(mnist_dir, SplitKind::Test).with_context(|| {
        format!(
            "cannot read MNIST's test split from {}",
            mnist_dir.display()
        )
    })?;
    Ok((0..n.min(split.len()))
        .map(|i| (split.image(i).to_vec(), split.labels[i]))
        .collect())
}

/// A grey 8-bit PNG of one 28 × 28 digit.
pub fn png(pixels: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let side = IMAGE_SIDE as u32;
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .context("cannot write a PNG header")?;
    writer
        .write_image_data(pixels)
        .context("cannot write a PNG's pixels")?;
    writer.finish().context("cannot finish a PNG")?;
    Ok(out)
}

/// A PNG whose header lies that it is `side` × `side` pixels (its data is one digit's): what a
/// hostile upload looks like. The IHDR chunk's size fields and CRC are rewritten.
pub fn lying_png(side: u32) -> anyhow::Result<Vec<u8>> {
    let mut bytes = png(&[0; IMAGE_SIDE * IMAGE_SIDE])?;
    // Signature (8), IHDR's length (4) and type (4), then width and height; its CRC covers the
    // type and the 13 bytes of data.
    bytes[16..20].copy_from_slice(&side.to_be_bytes());
    bytes[20..24].copy_from_slice(&side.to_be_bytes());
    let crc = crc32fast::hash(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digit_reads_back_from_its_png() {
        let pixels: Vec<u8> = (0..784).map(|i| (i % 256) as u8).collect();
        let bytes = png(&pixels).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (28, 28));
        assert_eq!(&buf[..784], &pixels[..]);
    }

    #[test]
    fn the_lying_png_declares_what_it_is_told_with_a_valid_header() {
        let bytes = lying_png(100_000).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        // The header parses (its CRC is right); the size is the lie.
        let reader = decoder.read_info();
        match reader {
            Ok(r) => assert_eq!(r.info().width, 100_000),
            Err(e) => assert!(!e.to_string().contains("CRC"), "{e}"),
        }
    }
}
