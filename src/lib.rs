//! lambda-cnn: the seed's MNIST CNN in candle, trained with our own optimizers, served from
//! AWS Lambda.
//!
//! Data flows one way: [`data`] → [`model`] → [`train`] (with [`optim`]) → weights →
//! [`predict`].

#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

// The core, which neither candle nor an AWS SDK reaches (`crates/core`), under the names it
// always had here.
pub use lambda_cnn_core::{
    arch, batch, clip, cost, data, errors, output, report, routes, store, tune,
};

#[cfg(feature = "ml")]
pub mod api;
pub mod metrics;
pub mod optim;
pub mod simd;

pub use lambda_cnn_core::{
    function_mark, mark_function, shipped_weights_path, SHIPPED_WEIGHTS, VERSION,
};

#[cfg(feature = "ml")]
pub mod bench;
#[cfg(feature = "ml")]
pub mod card;
#[cfg(feature = "import")]
pub mod import;
#[cfg(feature = "ml")]
pub mod model;
pub mod net;
#[cfg(feature = "ml")]
pub mod predict;
#[cfg(feature = "ml")]
pub mod preprocess;
#[cfg(feature = "ml")]
pub mod runtime;
#[cfg(feature = "ml")]
pub mod train;
