//! lambda-cnn: the seed's MNIST CNN in candle, trained with our own optimizers, served from
//! AWS Lambda.
//!
//! Data flows one way: [`data`] → [`model`] → [`train`] (with [`optim`]) → weights →
//! [`predict`].

pub mod card;
pub mod data;
pub mod model;
pub mod optim;
pub mod predict;
pub mod runtime;
pub mod train;
