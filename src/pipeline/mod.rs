//! The deploy pipeline, one module per stage: build → image (→ registry → lambda → api →
//! monitor). A stage takes the previous one's outputs, never its internals.

pub mod binary;
pub mod build;
pub mod image;
pub mod layer;
pub mod libs;
