//! Real photos and drawings are not MNIST: digits drawn dark on light, scaled up and placed
//! off-centre on a larger page must still be recognised after preprocessing.

mod common;
use common::*;
use image::{GrayImage, Luma};
use lambda_cnn::data::{load_split, SplitKind};
use lambda_cnn::model::Cnn;
use lambda_cnn::predict::{image_to_pixels, predict};

fn as_drawing(digit: &[u8], scale: u32, page: (u32, u32), at: (u32, u32)) -> Vec<u8> {
    let big = GrayImage::from_fn(28 * scale, 28 * scale, |x, y| {
        Luma([255 - digit[(y / scale * 28 + x / scale) as usize]])
    });
    let mut page_img = GrayImage::from_pixel(page.0, page.1, Luma([250]));
    image::imageops::replace(&mut page_img, &big, at.0 as i64, at.1 as i64);
    let mut out = Vec::new();
    page_img
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

#[test]
fn dark_on_light_scaled_up_digits_are_still_recognised() {
    let test = load_split(&mnist_dir(), SplitKind::Test).unwrap();
    let (model, _) = Cnn::load(&shipped_weights()).unwrap();
    let n = 100;
    let mut correct = 0;
    for i in 0..n {
        // Vary the scale and the position so no single geometry is tuned for.
        let scale = 3 + (i % 4) as u32;
        let side = 28 * scale;
        let png = as_drawing(
            test.image(i),
            scale,
            (side + 60, side + 30),
            ((i as u32 * 7) % 60, (i as u32 * 3) % 30),
        );
        let pixels = image_to_pixels(&png).unwrap();
        let p = predict(&model, &pixels).unwrap().pop().unwrap();
        correct += usize::from(p.digit == test.labels[i]);
    }
    // The shipped model gets ~99% of these digits right in their MNIST form.
    assert!(
        correct >= 95,
        "{correct}/{n} recognised after preprocessing"
    );
}
