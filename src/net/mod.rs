//! Any imported CNN, served the way the seed's model is: a [`ModelSpec`] (the description
//! that travels with the weights) and its tensors, stored together in one safetensors file
//! ([`file`]) and evaluated with candle ([`Network`]). A model whose layers are the seed's
//! runs on the seed's own kernels ([`crate::model::Cnn`]), so importing it costs no speed.

//!
//! The description ([`spec`]) and the reading of a file's header ([`header`]) need no candle:
//! they are the core's (`lambda_cnn_core::net`), so the deploy tooling checks a model with
//! them before shipping it.

pub use lambda_cnn_core::net::{header, spec};

#[cfg(feature = "ml")]
mod engine;
#[cfg(feature = "ml")]
pub mod eval;
#[cfg(feature = "ml")]
pub mod file;
#[cfg(feature = "ml")]
pub mod input;
#[cfg(feature = "ml")]
mod network;

#[cfg(feature = "ml")]
pub(crate) use network::bad;
#[cfg(feature = "ml")]
pub use network::{Answer, Network, MAX_BATCH_VALUES};
pub use spec::{InputSpec, ModelSpec, Preprocess, Sample, Shape};
