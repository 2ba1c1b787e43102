//! What one `POST /predict` may cost, decided before the work starts: the body's size, the
//! number of inputs and of values per input (counted while the JSON streams past, [`super::body`]),
//! every image's pixels summed from their headers against [`MAX_REQUEST_PIXELS`] before any
//! is decoded, the model's work per input ([`crate::net::spec::Plan::macs`]) capping the inputs
//! at [`MAX_REQUEST_MACS`], and a decoding deadline ([`MAX_DECODE_TIME`]).

use super::BadRequest;
use crate::predict::MAX_IMAGE_SIDE;
use std::time::Duration;

/// Lambda's own limit for a synchronous request payload.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
/// Images per request (`instances`).
pub const MAX_INSTANCES: usize = crate::net::spec::limits::MAX_INSTANCES;
/// Pixels decoded per request, all images together, as their headers declare them: one
/// 2048×2048 image, or 256 of 128×128. Decoding and preprocessing this many takes ~0.2 s on
/// one core (docs/cli-and-functions.md, Limits).
pub const MAX_REQUEST_PIXELS: u64 = 2048 * 2048;
/// Multiply-adds per request, all images together: about a second of one Lambda vCPU. The
/// seed's model (0.9 M per image) takes [`MAX_INSTANCES`] images; a model of 2 G per image,
/// the most [`crate::net::spec::limits::MAX_MACS`] allows, one.
pub const MAX_REQUEST_MACS: u64 = 4_000_000_000;
/// A request that is still decoding after this long is refused, whatever the invocation's
/// deadline; the pixel budget keeps real requests far below it.
pub const MAX_DECODE_TIME: Duration = Duration::from_secs(5);

/// Images one request may hold for a model of `macs` multiply-adds and `input_pixels` pixels
/// per input: every input costs at least the model's input size (charged before decoding,
/// whatever its picture's size), and at least one is always allowed.
pub fn max_instances(macs: u64, input_pixels: u64) -> usize {
    let by_work = MAX_REQUEST_MACS / macs.max(1);
    let by_pixels = MAX_REQUEST_PIXELS / input_pixels.max(1);
    by_work.min(by_pixels).clamp(1, MAX_INSTANCES as u64) as usize
}

/// A request's (or a batch item's) pixels against [`MAX_REQUEST_PIXELS`], from the images'
/// headers, before any is decoded.
pub(super) fn within_budget(total: u64) -> Result<(), BadRequest> {
    if total > MAX_REQUEST_PIXELS {
        return Err(BadRequest(
            413,
            format!(
                "the images hold {total} pixels in all; at most {MAX_REQUEST_PIXELS} (one 2048×2048 image, or {MAX_INSTANCES} of 128×128) per request, each at most {MAX_IMAGE_SIDE} on a side: send smaller images or fewer per request"
            ),
        ));
    }
    Ok(())
}
