//! An uploaded image as an imported model's input: raw values (0..=255, row-major, channels
//! last) of the model's size, made the way its description says ([`Preprocess`]).

use super::spec::{InputSpec, Preprocess};
use crate::predict::{decode_image, image_to_pixels, InputError};
use image::imageops::FilterType;

/// The model's raw input from a PNG or JPEG. The caller bounds the work by
/// [`crate::predict::image_size`] first.
pub fn image_to_input(bytes: &[u8], input: &InputSpec) -> Result<Vec<f32>, InputError> {
    if input.preprocess == Preprocess::Digit {
        // MNIST's own preprocessing, at 28×28 (the description checks the size).
        return Ok(image_to_pixels(bytes)?
            .into_iter()
            .map(|v| v * 255.0)
            .collect());
    }
    let img = decode_image(bytes)?;
    let (w, h) = (input.width as u32, input.height as u32);
    if input.preprocess == Preprocess::None && (img.width(), img.height()) != (w, h) {
        return Err(InputError::NotAnImage(format!(
            "the image is {}×{}; this model takes {w}×{h} images as they are (no resizing)",
            img.width(),
            img.height()
        )));
    }
    // Transparency over white, then the model's channels.
    let rgba = img.to_rgba8();
    let over_white = image::RgbaImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as f32 / 255.0;
        let mix = |c: u8| (c as f32 * a + 255.0 * (1.0 - a)).round() as u8;
        image::Rgba([mix(p[0]), mix(p[1]), mix(p[2]), p[3]])
    });
    let sized = if (over_white.width(), over_white.height()) == (w, h) {
        over_white
    } else {
        image::imageops::resize(&over_white, w, h, FilterType::Triangle)
    };
    let dynamic = image::DynamicImage::ImageRgba8(sized);
    let raw: Vec<u8> = match input.channels {
        1 => dynamic.to_luma8().into_raw(),
        2 => dynamic.to_luma_alpha8().into_raw(),
        3 => dynamic.to_rgb8().into_raw(),
        _ => dynamic.to_rgba8().into_raw(),
    };
    Ok(raw.into_iter().map(f32::from).collect())
}
