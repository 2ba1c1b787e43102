//! lambda-cnn: the seed's MNIST CNN in candle, trained with our own optimizers, served from
//! AWS Lambda.
//!
//! Data flows one way: [`data`] → [`model`] → [`train`] (with [`optim`]) → weights →
//! [`predict`].

pub mod data;
pub mod optim;

#[cfg(feature = "ml")]
pub mod card;
#[cfg(feature = "ml")]
pub mod model;
#[cfg(feature = "ml")]
pub mod predict;
#[cfg(feature = "ml")]
pub mod runtime;
#[cfg(feature = "ml")]
pub mod train;
