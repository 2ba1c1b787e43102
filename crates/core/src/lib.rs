//! The core of lambda-cnn that neither candle nor an AWS SDK (other than S3's, behind `s3`)
//! reaches: MNIST ([`data`]), the model file's description ([`net`]), the route table
//! ([`routes`]), what an invocation costs and reports ([`cost`], [`report`], [`tune`]), batch
//! scoring's records ([`batch`]), the model store's URIs ([`store`]), and how the tools print
//! ([`output`], [`errors`]). The ML crate (`lambda-cnn`, candle) and the deploy tooling both
//! build on it, so what they share is written once, here.

#![warn(missing_docs)]

pub mod arch;
pub mod batch;
pub mod clip;
pub mod cost;
pub mod data;
pub mod errors;
pub mod net;
pub mod output;
pub mod report;
pub mod routes;
pub mod store;
pub mod tune;

/// The path of the shipped weights, as a literal (for `concat!`): see [`SHIPPED_WEIGHTS`].
#[macro_export]
macro_rules! shipped_weights_path {
    () => {
        "model-weights/mnist-cnn.safetensors"
    };
}

/// The shipped weights, relative to the repository root (and to /var/task in an image): the
/// one place the path is written.
pub const SHIPPED_WEIGHTS: &str = shipped_weights_path!();

/// The mark a function binary carries (`function_mark!("predict")`), so that `deploy image`
/// can refuse to pack the train binary as the predict image: the functions write it into
/// their binaries with [`mark_function!`], the image builder looks for it.
#[macro_export]
macro_rules! function_mark {
    ($name:literal) => {
        concat!("lambda-cnn-function=", $name, ";")
    };
}

/// Writes [`function_mark!`] of `$name` into the binary (kept by `#[used]`).
#[macro_export]
macro_rules! mark_function {
    ($name:literal) => {
        #[used]
        static LAMBDA_CNN_FUNCTION_MARK: &[u8] = $crate::function_mark!($name).as_bytes();
    };
}

/// The version the tools print: the crate's and the git revision built from (`build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("LAMBDA_CNN_GIT_REV"),
    ")"
);
