//! Turning an input into the model's 784 values and the model's output into a prediction.

use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};
use crate::model::{argmax, Cnn, ModelError, CLASSES};
use serde::{Deserialize, Serialize};

/// Images larger than this on either side are refused before decoding their pixels.
pub const MAX_IMAGE_SIDE: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("the bytes are not a PNG or JPEG image ({0})")]
    NotAnImage(String),
    #[error("the image is {width}×{height}; the largest accepted is {max}×{max}")]
    TooLarge { width: u32, height: u32, max: u32 },
    #[error(transparent)]
    Preprocess(#[from] crate::preprocess::PreprocessError),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Prediction {
    pub digit: u8,
    pub probabilities: [f32; CLASSES],
}

/// Decodes a PNG or JPEG into the model's input: 784 values in [0, 1], row-major. A 28×28
/// image is taken as it is (converted to grey), as an MNIST digit; any other size is made
/// MNIST-like first ([`crate::preprocess`]).
pub fn image_to_pixels(bytes: &[u8]) -> Result<Vec<f32>, InputError> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| InputError::NotAnImage(e.to_string()))?;
    if reader.format().is_none() {
        return Err(InputError::NotAnImage("unrecognised format".into()));
    }
    let not_an_image = |e: image::ImageError| InputError::NotAnImage(e.to_string());
    // One decoder: its header gives the size, checked before any pixel is decoded.
    let decoder = reader.into_decoder().map_err(not_an_image)?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(InputError::TooLarge {
            width,
            height,
            max: MAX_IMAGE_SIDE,
        });
    }
    let img = image::DynamicImage::from_decoder(decoder).map_err(not_an_image)?;
    let grey = img.to_luma8();
    if (width, height) == (IMAGE_SIDE as u32, IMAGE_SIDE as u32) {
        debug_assert_eq!(grey.len(), IMAGE_PIXELS);
        return Ok(grey.as_raw().iter().map(|&p| p as f32 / 255.0).collect());
    }
    Ok(crate::preprocess::to_mnist(&grey)?)
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

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::GrayImage::from_fn(width, height, |x, _| image::Luma([(x * 9) as u8]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn a_28x28_png_is_taken_as_it_is() {
        let pixels = image_to_pixels(&png(28, 28)).unwrap();
        assert_eq!(pixels.len(), 784);
        assert_eq!(pixels[1], 9.0 / 255.0);
        assert_eq!(pixels[28 + 27], (27.0 * 9.0) / 255.0);
    }

    #[test]
    fn other_sizes_are_preprocessed_and_non_images_refused() {
        assert_eq!(image_to_pixels(&png(30, 28)).unwrap().len(), IMAGE_PIXELS);
        let blank = image::GrayImage::new(40, 40);
        let mut bytes = Vec::new();
        blank
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        assert!(matches!(
            image_to_pixels(&bytes),
            Err(InputError::Preprocess(_))
        ));
        assert!(matches!(
            image_to_pixels(b"hello, world"),
            Err(InputError::NotAnImage(_))
        ));
        assert!(matches!(
            image_to_pixels(&[]),
            Err(InputError::NotAnImage(_))
        ));
        let mut truncated = png(28, 28);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            image_to_pixels(&truncated),
            Err(InputError::NotAnImage(_))
        ));
    }
}
