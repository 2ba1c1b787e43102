//! im2col for the first layer. The 3×3 valid convolution over a 28×28 image is a matmul of
//! the image's 26·26 = 676 patches (9 pixels each) with the [9, 32] kernel matrix. The patches
//! depend only on the data (the first layer needs no input gradient), so they are built once
//! per batch outside the autograd graph, already scaled to [0, 1].

use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};

pub const KERNEL: usize = 3;
pub const CONV_SIDE: usize = IMAGE_SIDE - KERNEL + 1; // 26
pub const PATCHES_PER_IMAGE: usize = CONV_SIDE * CONV_SIDE; // 676
pub const PATCH_LEN: usize = KERNEL * KERNEL; // 9

/// Appends the patches of one image to `out`: row (y·26 + x) holds pixels (y+dy, x+dx) for
/// dy, dx in 0..3, at column dy·3 + dx, each multiplied by `scale`.
pub fn push_patches<T: Copy + Into<f32>>(image: &[T], scale: f32, out: &mut Vec<f32>) {
    debug_assert_eq!(image.len(), IMAGE_PIXELS);
    out.reserve(PATCHES_PER_IMAGE * PATCH_LEN);
    for y in 0..CONV_SIDE {
        for x in 0..CONV_SIDE {
            for dy in 0..KERNEL {
                let row = &image[(y + dy) * IMAGE_SIDE + x..][..KERNEL];
                out.extend(row.iter().map(|&p| p.into() * scale));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_rows_hold_the_3x3_neighbourhood() {
        let image: Vec<f32> = (0..IMAGE_PIXELS).map(|i| i as f32).collect();
        let mut out = Vec::new();
        push_patches(&image, 1.0, &mut out);
        assert_eq!(out.len(), PATCHES_PER_IMAGE * PATCH_LEN);
        // Patch at (y=2, x=5): pixels (2..5, 5..8).
        let row = &out[(2 * CONV_SIDE + 5) * PATCH_LEN..][..PATCH_LEN];
        let expected: Vec<f32> = (2..5)
            .flat_map(|y| (5..8).map(move |x| (y * IMAGE_SIDE + x) as f32))
            .collect();
        assert_eq!(row, &expected[..]);
    }

    #[test]
    fn bytes_are_scaled() {
        let image = vec![255u8; IMAGE_PIXELS];
        let mut out = Vec::new();
        push_patches(&image, 1.0 / 255.0, &mut out);
        assert!(out.iter().all(|&v| (v - 1.0).abs() < 1e-7));
    }
}
