//! Image decoding and preprocessing: any bytes as a PNG or JPEG, header first, then the
//! whole decode when the header is within the limits. Nothing may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(size) = lambda_cnn::predict::image_size(data) {
        // The same budget a request has.
        if size.pixels() <= lambda_cnn::api::predict::MAX_REQUEST_PIXELS {
            if let Ok(pixels) = lambda_cnn::predict::image_to_pixels(data) {
                assert_eq!(pixels.len(), 784);
                assert!(pixels.iter().all(|p| (0.0..=1.0).contains(p)));
            }
        }
    }
});
