//! The model file's description ([`spec`]) and the reading of its header ([`header`]): what
//! needs no candle, so that the deploy tooling can check a model before shipping it. The ML
//! crate's `lambda_cnn::net` adds the evaluation.

pub mod header;
pub mod spec;

pub use spec::{InputSpec, ModelSpec, Preprocess, Sample, Shape};
