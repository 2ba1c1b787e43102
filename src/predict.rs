//! Turning an input into the model's 784 values and the model's output into a prediction.

use crate::model::{argmax, Cnn, ModelError, CLASSES};
use serde::{Deserialize, Serialize};

/// Images larger than this on either side are refused from their header, before any pixel is
/// decoded.
pub const MAX_IMAGE_SIDE: u32 = 4096;
/// What a decoder may allocate besides the pixels (a PNG's colour profile and text chunks,
/// inflated; one row of pixels). Real ICC profiles are a few KB; without this bound a 600 KB
/// PNG inflates its profile to a gigabyte before its header is checked.
pub const MAX_METADATA_BYTES: u64 = 1 << 20;

/// Why an input could not become the model's 784 values.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their messages
pub enum InputError {
    #[error("the bytes are not a PNG or JPEG image ({0})")]
    NotAnImage(String),
    #[error("the image is {width}×{height}; the largest accepted is {max}×{max}")]
    TooLarge { width: u32, height: u32, max: u32 },
    #[error("the image is over a decoder limit ({0}); send a plain PNG or JPEG")]
    OverLimit(String),
    #[error(transparent)]
    Preprocess(#[from] crate::preprocess::PreprocessError),
}

impl InputError {
    /// The input is refused for its size (HTTP 413), not its content.
    pub fn is_size_limit(&self) -> bool {
        matches!(self, InputError::TooLarge { .. } | InputError::OverLimit(_))
    }
}

/// The model's answer for one image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Prediction {
    /// The most probable digit.
    pub digit: u8,
    /// The softmax over the ten digits.
    pub probabilities: [f32; CLASSES],
}

/// An image's size, read from its header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSize {
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
}

impl ImageSize {
    /// width × height.
    pub fn pixels(&self) -> u64 {
        self.width as u64 * self.height as u64
    }
}

/// A PNG or JPEG decoder with its limits set, past the header (so the size is known) and
/// nothing else.
fn open(bytes: &[u8]) -> Result<impl image::ImageDecoder + '_, InputError> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| InputError::NotAnImage(e.to_string()))?;
    match reader.format() {
        Some(image::ImageFormat::Jpeg) if !jpeg_is_complete(bytes) => {
            return Err(InputError::NotAnImage(
                "the JPEG is truncated (its image data has no end-of-image marker)".into(),
            ))
        }
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        Some(other) => return Err(InputError::NotAnImage(format!("{other:?} is not accepted"))),
        None => return Err(InputError::NotAnImage("unrecognised format".into())),
    }
    // The sides are checked below, with the size in the message; the allocation limit is the
    // one that must hold while the header is read.
    let mut limits = image::Limits::no_limits();
    limits.max_alloc = Some(MAX_METADATA_BYTES);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(classify)?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(InputError::TooLarge {
            width,
            height,
            max: MAX_IMAGE_SIDE,
        });
    }
    Ok(decoder)
}

/// Whether a JPEG's image data is followed by its end-of-image marker (`FF D9` after the first
/// start-of-scan `FF DA`). The decoder fills a truncated scan with grey and answers without an
/// error, which would be a confident prediction of a picture nobody sent. Inside the scan a
/// 0xFF byte is stuffed (`FF 00`), so `FF D9` there is the marker; one in an EXIF thumbnail
/// comes before the scan and does not count.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let find = |m: [u8; 2]| bytes.windows(2).position(|w| w == m);
    let last_eoi = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    match (find([0xFF, 0xDA]), last_eoi) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

fn classify(e: image::ImageError) -> InputError {
    use image::error::ImageError;
    match e {
        ImageError::Limits(l) => InputError::OverLimit(l.to_string()),
        e => InputError::NotAnImage(e.to_string()),
    }
}

/// The size of a PNG or JPEG from its header: cheap, and bounded whatever the bytes declare.
pub fn image_size(bytes: &[u8]) -> Result<ImageSize, InputError> {
    let (width, height) = image::ImageDecoder::dimensions(&open(bytes)?);
    Ok(ImageSize { width, height })
}

/// Decodes a PNG or JPEG into the model's input: 784 values in [0, 1], row-major. The EXIF
/// orientation is applied; transparency is laid over a background that contrasts with the ink
/// (a canvas drawing has a transparent background); then [`crate::preprocess::to_model_input`].
/// The caller bounds the work by [`image_size`] first: decoding costs what the header declares.
pub fn image_to_pixels(bytes: &[u8]) -> Result<Vec<f32>, InputError> {
    let img = decode_image(bytes)?;
    let (width, height) = (img.width(), img.height());
    let grey = flatten(&img)?;
    Ok(crate::preprocess::to_model_input(
        grey,
        width as usize,
        height as usize,
    )?)
}

/// Decodes a PNG or JPEG within the limits of [`image_size`], with its EXIF orientation
/// applied. The caller bounds the work by [`image_size`] first.
pub fn decode_image(bytes: &[u8]) -> Result<image::DynamicImage, InputError> {
    let mut decoder = open(bytes)?;
    let orientation = image::ImageDecoder::orientation(&mut decoder)
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(classify)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Grey values in [0, 1]. Transparent pixels take the background the ink does not have: dark
/// strokes on a transparent canvas are laid on white, light strokes on black.
fn flatten(img: &image::DynamicImage) -> Result<Vec<f32>, InputError> {
    if !img.color().has_alpha() {
        return Ok(img
            .to_luma8()
            .as_raw()
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect());
    }
    let la = img.to_luma_alpha8();
    let (mut ink, mut cover) = (0f64, 0f64);
    for p in la.pixels() {
        ink += p[0] as f64 * p[1] as f64;
        cover += p[1] as f64;
    }
    if cover == 0.0 {
        return Err(crate::preprocess::PreprocessError::Blank.into());
    }
    let background = if ink / cover > 127.5 { 0.0 } else { 1.0 };
    Ok(la
        .pixels()
        .map(|p| {
            let a = p[1] as f32 / 255.0;
            p[0] as f32 / 255.0 * a + background * (1.0 - a)
        })
        .collect())
}

/// Predicts the digit in each image of `pixels` (784 values in [0, 1] per image).
pub fn predict(model: &Cnn, pixels: &[f32]) -> Result<Vec<Prediction>, ModelError> {
    Ok(model
        .probabilities(pixels)?
        .into_iter()
        .map(|probabilities| Prediction {
            digit: argmax(&probabilities) as u8,
            probabilities,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};
    use image::{GrayImage, ImageFormat, Luma, LumaA, Rgba, RgbaImage};

    fn encode(img: &image::DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), format)
            .unwrap();
        out
    }

    /// A white bar down the middle of a black 28×28 frame: MNIST-like.
    fn bar(width: u32, height: u32, ink: u8, paper: u8) -> GrayImage {
        GrayImage::from_fn(width, height, |x, y| {
            let (cx, cy) = (width / 2, height / 2);
            Luma([
                if x.abs_diff(cx) <= width / 28 && y.abs_diff(cy) <= height * 9 / 28 {
                    ink
                } else {
                    paper
                },
            ])
        })
    }

    /// Issue 24, item 6: a truncated JPEG was decoded (grey where the data stopped) and
    /// predicted with exit 0.
    #[test]
    fn a_truncated_jpeg_is_refused_and_a_whole_one_taken() {
        let jpeg = encode(&bar(64, 64, 255, 0).into(), ImageFormat::Jpeg);
        assert!(image_to_pixels(&jpeg).is_ok());
        for cut in [jpeg.len() - 2, jpeg.len() * 2 / 3, jpeg.len() / 2] {
            let err = image_to_pixels(&jpeg[..cut]).unwrap_err();
            assert!(err.to_string().contains("truncated"), "{cut}: {err}");
        }
        // Trailing bytes after the marker (some cameras pad) are no reason to refuse.
        let mut padded = jpeg.clone();
        padded.extend([0u8; 16]);
        assert!(image_to_pixels(&padded).is_ok());
        // A truncated PNG is an error of the decoder's own.
        let png = encode(&bar(64, 64, 255, 0).into(), ImageFormat::Png);
        assert!(image_to_pixels(&png[..png.len() / 2]).is_err());
    }

    #[test]
    fn an_mnist_like_28x28_png_is_taken_as_it_is() {
        let img = bar(28, 28, 200, 0);
        let pixels = image_to_pixels(&encode(&img.clone().into(), ImageFormat::Png)).unwrap();
        let expect: Vec<f32> = img.as_raw().iter().map(|&p| p as f32 / 255.0).collect();
        assert_eq!(pixels, expect);
    }

    #[test]
    fn a_dark_on_light_28x28_is_preprocessed_like_any_picture() {
        let dark_on_light = bar(28, 28, 0, 255);
        let pixels = image_to_pixels(&encode(&dark_on_light.into(), ImageFormat::Png)).unwrap();
        // Inverted: the background is black and the bar white.
        assert_eq!(pixels[0], 0.0);
        assert!(pixels[14 * IMAGE_SIDE + 14] > 0.9 || pixels[14 * IMAGE_SIDE + 13] > 0.9);
    }

    #[test]
    fn blank_images_are_refused_at_every_size() {
        for (w, h, v) in [
            (28, 28, 0),
            (28, 28, 255),
            (28, 28, 128),
            (40, 40, 0),
            (300, 20, 200),
        ] {
            let img: image::DynamicImage = GrayImage::from_pixel(w, h, Luma([v])).into();
            assert!(
                matches!(
                    image_to_pixels(&encode(&img, ImageFormat::Png)),
                    Err(InputError::Preprocess(_))
                ),
                "{w}×{h} of {v}"
            );
        }
        let clear: image::DynamicImage = RgbaImage::from_pixel(50, 50, Rgba([0, 0, 0, 0])).into();
        assert!(matches!(
            image_to_pixels(&encode(&clear, ImageFormat::Png)),
            Err(InputError::Preprocess(_))
        ));
    }

    #[test]
    fn a_canvas_drawing_on_a_transparent_background_is_read() {
        // Black strokes on a fully transparent canvas, as a browser's toDataURL() gives.
        let grey = bar(280, 280, 255, 0);
        let strokes =
            image::ImageBuffer::from_fn(280, 280, |x, y| LumaA([0u8, grey.get_pixel(x, y)[0]]));
        let pixels = image_to_pixels(&encode(
            &image::DynamicImage::ImageLumaA8(strokes),
            ImageFormat::Png,
        ))
        .unwrap();
        let reference = image_to_pixels(&encode(&grey.into(), ImageFormat::Png)).unwrap();
        assert_eq!(pixels, reference);
        // White strokes on a transparent canvas (a dark theme) are read too.
        let white = RgbaImage::from_fn(100, 100, |x, y| {
            Rgba([
                255,
                255,
                255,
                if x.abs_diff(50) < 4 && y.abs_diff(50) < 30 {
                    255
                } else {
                    0
                },
            ])
        });
        assert!(image_to_pixels(&encode(&white.into(), ImageFormat::Png)).is_ok());
    }

    #[test]
    fn the_exif_orientation_is_applied() {
        // A horizontal bar stored sideways, with Orientation 6 (rotate 90° clockwise to view)...
        let stored: image::DynamicImage = bar(280, 280, 255, 0).into();
        let stored = stored.rotate270();
        let jpeg = encode(
            &image::DynamicImage::ImageLuma8(stored.to_luma8()),
            ImageFormat::Jpeg,
        );
        // Exif: "Exif\0\0" + little-endian TIFF with one IFD entry, Orientation (0x0112) = 6.
        let exif: Vec<u8> = [
            b"II*\0".as_slice(),
            &8u32.to_le_bytes(),
            &1u16.to_le_bytes(),
            &0x0112u16.to_le_bytes(),
            &3u16.to_le_bytes(),
            &1u32.to_le_bytes(),
            &6u16.to_le_bytes(),
            &[0, 0],
            &0u32.to_le_bytes(),
        ]
        .concat();
        // Splice an APP1 segment after SOI.
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend(((exif.len() + 8) as u16).to_be_bytes());
        app1.extend(b"Exif\0\0");
        app1.extend(&exif);
        let mut with_exif = jpeg[..2].to_vec();
        with_exif.extend(app1);
        with_exif.extend(&jpeg[2..]);
        let upright = image_to_pixels(&with_exif).unwrap();
        let ignored = image_to_pixels(&jpeg).unwrap();
        let rows = |p: &[f32]| {
            (0..IMAGE_SIDE)
                .filter(|y| (0..IMAGE_SIDE).any(|x| p[y * IMAGE_SIDE + x] > 0.5))
                .count()
        };
        // Upright, the bar is tall (20 rows, as MNIST scales it); read sideways it is flat.
        assert_eq!(rows(&upright), 20);
        assert!(rows(&ignored) < 6, "{}", rows(&ignored));
    }

    #[test]
    fn sizes_come_from_headers_and_big_ones_are_refused_before_decoding() {
        let png = encode(&bar(30, 28, 255, 0).into(), ImageFormat::Png);
        assert_eq!(
            image_size(&png).unwrap(),
            ImageSize {
                width: 30,
                height: 28
            }
        );
        assert_eq!(image_to_pixels(&png).unwrap().len(), IMAGE_PIXELS);
        let header = test_images::png_header(MAX_IMAGE_SIDE + 1, 8);
        assert!(matches!(
            image_size(&header),
            Err(InputError::TooLarge { .. })
        ));
        // A JPEG header that declares 65535×65535.
        let mut jpeg = encode(&bar(16, 16, 255, 0).into(), ImageFormat::Jpeg);
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(
            image_size(&jpeg),
            Err(InputError::TooLarge { .. })
        ));
        assert!(matches!(
            image_to_pixels(&jpeg),
            Err(InputError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_png_colour_profile_bomb_inflates_no_further_than_the_allocation_limit() {
        use std::io::Write;
        // 1×1 PNG whose iCCP chunk inflates to 64 MB (from ~64 KB).
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![0u8; 64 << 20]).unwrap();
        let profile = z.finish().unwrap();
        let one = encode(
            &GrayImage::from_pixel(1, 1, Luma([9])).into(),
            ImageFormat::Png,
        );
        let mut chunk = b"iCCP".to_vec();
        chunk.extend(b"bomb\0\0");
        chunk.extend(&profile);
        let mut png = one[..33].to_vec(); // signature + IHDR
        png.extend(((chunk.len() - 4) as u32).to_be_bytes());
        png.extend(&chunk);
        png.extend(test_images::crc32(&chunk).to_be_bytes());
        png.extend(&one[33..]);
        // The decoder inflates at most MAX_METADATA_BYTES of it and drops the profile; what is
        // left is a 1×1 image, blank.
        let start = std::time::Instant::now();
        assert_eq!(
            image_size(&png).unwrap(),
            ImageSize {
                width: 1,
                height: 1
            }
        );
        assert!(matches!(
            image_to_pixels(&png),
            Err(InputError::Preprocess(_))
        ));
        assert!(
            start.elapsed() < std::time::Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn non_images_are_refused() {
        for bytes in [&b"hello, world"[..], &[], b"GIF89a\x01\0\x01\0\0\0\0;"] {
            assert!(matches!(
                image_to_pixels(bytes),
                Err(InputError::NotAnImage(_))
            ));
        }
        let mut truncated = encode(&bar(28, 28, 255, 0).into(), ImageFormat::Png);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            image_to_pixels(&truncated),
            Err(InputError::NotAnImage(_))
        ));
    }
}

/// Hand-made image bytes for tests: headers that declare what a decoder must refuse.
#[cfg(test)]
pub(crate) mod test_images {
    /// The bytes of a PNG that declares `width`×`height` and holds no pixel data: its header
    /// alone must be enough to refuse it.
    pub(crate) fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(width.to_be_bytes());
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, 0, 0, 0, 0]);
        out.extend(13u32.to_be_bytes());
        out.extend(&ihdr);
        out.extend(crc32(&ihdr).to_be_bytes());
        // An empty IDAT and the end: a decoder reads its header up to the first IDAT.
        for kind in [&b"IDAT"[..], b"IEND"] {
            out.extend(0u32.to_be_bytes());
            out.extend(kind);
            out.extend(crc32(kind).to_be_bytes());
        }
        out
    }

    pub(crate) fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
