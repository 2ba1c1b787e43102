//! The deploy pipeline, one module per stage: build → image → registry (+ ecr) → lambda
//! (+ iam, smoke) → apigw → logs (monitor). A stage takes the previous one's outputs, never
//! its internals; `release` chains lambda, iam, smoke and logs for one function, `doctor`
//! reads what each would meet, and `destroy` removes what they made.
//!
//! The crate `lambda-cnn-deploy` depends on the core (`lambda-cnn-core`) and never on candle:
//! the deploy tooling cannot link the model even in a build of the whole workspace.

#![warn(missing_docs)]

// The core's modules under the names the stages have always used (`crate::cost`, ...).
use lambda_cnn_core::{
    arch, batch as records, clip, cost, data, errors, function_mark, net, report, routes,
    shipped_weights_path, store, tune as judging,
};

pub mod apigw;
pub mod apigw_rest;
pub mod aws;
pub mod batch;
pub mod binary;
pub mod bucket;
pub mod build;
pub mod config;
pub mod destroy;
pub mod doctor;
pub mod ecr;
pub mod history;
pub mod iam;
pub mod image;
pub mod invoke;
pub mod lambda;
pub mod layer;
pub mod libs;
pub mod logs;
pub mod plan;
pub mod policy;
pub mod registry;
pub mod release;
pub mod rollback;
pub mod smoke;
pub mod status;
pub mod tune;
