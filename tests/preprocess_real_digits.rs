//! Real photos and drawings are not MNIST: digits drawn dark on light, scaled up and placed
//! off-centre on a larger page must still be recognised after preprocessing.

use common::*;
use image::{GrayImage, Luma};
use lambda_cnn::model::Cnn;
use lambda_cnn::predict::{image_to_pixels, predict};
use lambda_cnn_test_kit as common;

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
    let test = common::mnist_test();
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

fn png_of(img: &GrayImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

#[test]
fn real_mnist_digits_are_taken_as_they_are_and_28x28_drawings_are_not() {
    let test = common::mnist_test();
    let (model, _) = Cnn::load(&shipped_weights()).unwrap();
    let n = 1000;
    let (mut as_is, mut inverted_right, mut shifted_right) = (0, 0, 0);
    for i in 0..n {
        let digit = test.image(i);
        let values: Vec<f32> = digit.iter().map(|&p| p as f32 / 255.0).collect();
        if lambda_cnn::preprocess::is_mnist_like(&values).unwrap() {
            as_is += 1;
        }
        // Dark on light, 28×28: what a user draws in a paint program.
        let inverted =
            GrayImage::from_fn(28, 28, |x, y| Luma([255 - digit[(y * 28 + x) as usize]]));
        let p = predict(&model, &image_to_pixels(&png_of(&inverted)).unwrap()).unwrap();
        inverted_right += usize::from(p[0].digit == test.labels[i]);
        // Pushed into a corner of the frame.
        let shifted = GrayImage::from_fn(28, 28, |x, y| {
            Luma([if x >= 4 && y >= 4 {
                digit[((y - 4) * 28 + x - 4) as usize]
            } else {
                0
            }])
        });
        let p = predict(&model, &image_to_pixels(&png_of(&shifted)).unwrap()).unwrap();
        shifted_right += usize::from(p[0].digit == test.labels[i]);
    }
    assert_eq!(as_is, n, "real MNIST digits are all taken as they are");
    assert!(
        inverted_right >= 950,
        "{inverted_right}/{n} dark-on-light 28×28 digits right"
    );
    assert!(
        shifted_right >= 950,
        "{shifted_right}/{n} off-centre 28×28 digits right"
    );
}
