//! Making any picture of a digit look like an MNIST digit, the way MNIST's digits were made:
//! grey, white ink on black (inverted when the background is light), cropped to the digit,
//! scaled to fit a 20×20 box keeping its aspect ratio, and placed in a 28×28 frame with its
//! centre of mass at the centre.

#![warn(missing_docs)]

use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};
use image::imageops::FilterType;
use image::{GrayImage, ImageBuffer, Luma};

/// The side of the box the digit is scaled to fit, as in MNIST.
const BOX: u32 = 20;
/// Ink below this fraction of the full range counts as background when cropping.
const INK: f32 = 0.1;

#[derive(Debug, thiserror::Error, PartialEq)]
// Documented by its messages.
#[allow(missing_docs)]
pub enum PreprocessError {
    #[error("the image is blank: no digit stands out from the background")]
    Blank,
}

/// The model's 784 inputs from grey values in [0, 1] (`width`×`height`, row-major, any
/// polarity). A 28×28 input that is already MNIST-like ([`is_mnist_like`]) is taken as it is;
/// everything else goes through [`to_mnist`]. Blank input is refused at every size.
pub fn to_model_input(
    values: Vec<f32>,
    width: usize,
    height: usize,
) -> Result<Vec<f32>, PreprocessError> {
    if (width, height) == (IMAGE_SIDE, IMAGE_SIDE) && is_mnist_like(&values)? {
        return Ok(values);
    }
    to_mnist_values(values, width, height)
}

/// Whether 28×28 grey values already look like an MNIST digit: light ink on a dark
/// background, its centre of mass near the frame's centre, spanning no more than MNIST's box. Such
/// an input is the model's own format, and reprocessing it would only blur it; a dark-on-light
/// or off-centre 28×28 drawing is not, and gets the same treatment as any other picture.
pub fn is_mnist_like(values: &[f32]) -> Result<bool, PreprocessError> {
    if values.len() != IMAGE_PIXELS {
        return Ok(false);
    }
    let (bg, peak) = (
        border_median(values, IMAGE_SIDE, IMAGE_SIDE),
        values.iter().copied().fold(0.0f32, f32::max),
    );
    let floor = values.iter().copied().fold(1.0f32, f32::min);
    if peak - floor < MIN_CONTRAST {
        return Err(PreprocessError::Blank);
    }
    if bg > MNIST_BACKGROUND {
        return Ok(false);
    }
    let (mut mass, mut mx, mut my) = (0f32, 0f32, 0f32);
    for (i, &p) in values.iter().enumerate() {
        let ink = (p - bg).max(0.0);
        mass += ink;
        mx += (i % IMAGE_SIDE) as f32 * ink;
        my += (i / IMAGE_SIDE) as f32 * ink;
    }
    if mass <= 0.0 {
        return Err(PreprocessError::Blank);
    }
    let centre = (IMAGE_SIDE as f32 - 1.0) / 2.0;
    let off = ((mx / mass - centre).abs()).max((my / mass - centre).abs());
    // MNIST scaled every digit into a 20×20 box: all 10,000 test digits' ink spans at most 20
    // pixels (a few touch the frame's edge, centred by mass); a drawing that fills the frame
    // does not look like that to the model.
    let lifted: Vec<f32> = values.iter().map(|&p| p - bg).collect();
    let Some((x0, y0, x1, y1)) = bounding_box(&lifted, IMAGE_SIDE, IMAGE_SIDE) else {
        return Err(PreprocessError::Blank);
    };
    let extent = (x1 - x0 + 1).max(y1 - y0 + 1);
    Ok(off <= MNIST_MAX_OFF_CENTRE && extent <= MNIST_MAX_EXTENT)
}

/// An MNIST border is black: a median above this is a light or grey background.
const MNIST_BACKGROUND: f32 = 0.1;
/// MNIST centres each digit's mass in the frame; its digits stay within this many pixels.
const MNIST_MAX_OFF_CENTRE: f32 = 3.0;
/// The most pixels an MNIST-like digit's ink spans, across or down (MNIST's: 20, and some slack).
const MNIST_MAX_EXTENT: usize = 22;
/// Less contrast than this between the darkest and lightest value is a blank image.
const MIN_CONTRAST: f32 = 0.15;

/// The model's 784 inputs in [0, 1] from a grey image of any size.
pub fn to_mnist(grey: &GrayImage) -> Result<Vec<f32>, PreprocessError> {
    let (w, h) = grey.dimensions();
    let v: Vec<f32> = grey.as_raw().iter().map(|&p| p as f32 / 255.0).collect();
    to_mnist_values(v, w as usize, h as usize)
}

/// [`to_mnist`] on grey values in [0, 1], `w`×`h`, row-major.
pub fn to_mnist_values(mut v: Vec<f32>, w: usize, h: usize) -> Result<Vec<f32>, PreprocessError> {
    if w == 0 || h == 0 || v.len() != w * h {
        return Err(PreprocessError::Blank);
    }
    // The border tells the background: MNIST is light ink on a dark background.
    let border = border_median(&v, w, h);
    let (bg, flip) = if border > 0.5 {
        (1.0 - border, true)
    } else {
        (border, false)
    };
    if flip {
        v.iter_mut().for_each(|p| *p = 1.0 - *p);
    }
    let peak = v.iter().copied().fold(0.0f32, f32::max);
    if peak - bg < MIN_CONTRAST {
        return Err(PreprocessError::Blank);
    }
    // Stretch so the background is 0 and the strongest ink 1.
    v.iter_mut()
        .for_each(|p| *p = ((*p - bg) / (peak - bg)).clamp(0.0, 1.0));

    let (x0, y0, x1, y1) = bounding_box(&v, w, h).ok_or(PreprocessError::Blank)?;
    let (cw, ch) = ((x1 - x0 + 1) as u32, (y1 - y0 + 1) as u32);
    let crop: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_fn(cw, ch, |x, y| {
        Luma([v[(y0 + y as usize) * w + x0 + x as usize]])
    });
    drop(v);
    let scale = BOX as f32 / cw.max(ch) as f32;
    let (sw, sh) = (
        ((cw as f32 * scale).round() as u32).clamp(1, BOX),
        ((ch as f32 * scale).round() as u32).clamp(1, BOX),
    );
    // Triangle filtering averages over the source pixels each output pixel covers, which is
    // what a large photo needs when it shrinks to 20 pixels.
    let digit = image::imageops::resize(&crop, sw, sh, FilterType::Triangle);

    let (mass, mx, my) = digit
        .enumerate_pixels()
        .fold((0f32, 0f32, 0f32), |(m, sx, sy), (x, y, p)| {
            (m + p[0], sx + x as f32 * p[0], sy + y as f32 * p[0])
        });
    let (cx, cy) = if mass > 0.0 {
        (mx / mass, my / mass)
    } else {
        (sw as f32 / 2.0, sh as f32 / 2.0)
    };
    let centre = (IMAGE_SIDE as f32 - 1.0) / 2.0;
    // Keep the whole digit inside the frame even when its mass is lopsided.
    let ox = ((centre - cx).round() as i64).clamp(0, (IMAGE_SIDE as u32 - sw) as i64) as usize;
    let oy = ((centre - cy).round() as i64).clamp(0, (IMAGE_SIDE as u32 - sh) as i64) as usize;

    let mut out = vec![0.0f32; IMAGE_PIXELS];
    for (x, y, p) in digit.enumerate_pixels() {
        out[(oy + y as usize) * IMAGE_SIDE + ox + x as usize] = p[0].clamp(0.0, 1.0);
    }
    Ok(out)
}

fn border_median(v: &[f32], w: usize, h: usize) -> f32 {
    let mut border: Vec<f32> = (0..w)
        .flat_map(|x| [v[x], v[(h - 1) * w + x]])
        .chain((0..h).flat_map(|y| [v[y * w], v[y * w + w - 1]]))
        .collect();
    border.sort_by(f32::total_cmp);
    border[border.len() / 2]
}

fn bounding_box(v: &[f32], w: usize, h: usize) -> Option<(usize, usize, usize, usize)> {
    let mut bbox: Option<(usize, usize, usize, usize)> = None;
    for y in 0..h {
        for x in 0..w {
            if v[y * w + x] > INK {
                bbox = Some(match bbox {
                    None => (x, y, x, y),
                    Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
                });
            }
        }
    }
    bbox
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dark_bar_on_white_becomes_a_centred_white_bar() {
        // A 10×60 dark vertical bar, off-centre on a 200×100 white page.
        let img = GrayImage::from_fn(200, 100, |x, y| {
            Luma([if (30..40).contains(&x) && (20..80).contains(&y) {
                10
            } else {
                245
            }])
        });
        let out = to_mnist(&img).unwrap();
        let at = |x: usize, y: usize| out[y * IMAGE_SIDE + x];
        // Scaled to 20 tall, ~3 wide, centred: ink in the middle, darkness at the corners.
        assert!(at(13, 14) > 0.9 || at(14, 14) > 0.9, "centre is ink");
        assert_eq!(at(0, 0), 0.0);
        assert_eq!(at(13, 2), 0.0, "above the 20-pixel box");
        let rows_with_ink = (0..IMAGE_SIDE)
            .filter(|&y| (0..IMAGE_SIDE).any(|x| at(x, y) > 0.5))
            .count();
        assert_eq!(rows_with_ink, 20);
    }

    #[test]
    fn a_28x28_digit_is_mnist_like_only_when_it_looks_like_mnists() {
        let frame =
            |x0: usize, x1: usize, y0: usize, y1: usize, ink: f32, paper: f32| -> Vec<f32> {
                (0..IMAGE_PIXELS)
                    .map(|i| {
                        let (x, y) = (i % IMAGE_SIDE, i / IMAGE_SIDE);
                        if (x0..x1).contains(&x) && (y0..y1).contains(&y) {
                            ink
                        } else {
                            paper
                        }
                    })
                    .collect()
            };
        // A bar 20 tall in the middle, light on dark: as MNIST draws it.
        assert_eq!(is_mnist_like(&frame(13, 15, 4, 24, 1.0, 0.0)), Ok(true));
        // The same, dark on light; the frame's full height; pushed into a corner.
        assert_eq!(is_mnist_like(&frame(13, 15, 4, 24, 0.0, 1.0)), Ok(false));
        assert_eq!(is_mnist_like(&frame(13, 15, 0, 28, 1.0, 0.0)), Ok(false));
        assert_eq!(is_mnist_like(&frame(0, 3, 0, 10, 1.0, 0.0)), Ok(false));
        assert_eq!(
            is_mnist_like(&vec![0.3; IMAGE_PIXELS]),
            Err(PreprocessError::Blank)
        );
    }

    #[test]
    fn a_blank_image_is_refused() {
        let img = GrayImage::from_pixel(50, 50, Luma([200]));
        assert_eq!(to_mnist(&img), Err(PreprocessError::Blank));
    }
}
