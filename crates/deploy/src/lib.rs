//! The deploy pipeline. [`pipeline`] runs the seed article's list — build → containerize →
//! upload → deploy → expose — over one module per service or stage: build, image, registry
//! (+ ecr), release (lambda, iam, smoke, logs for one function), apigw; then monitor (logs,
//! status). Beside them the operations: `doctor` reads what each step would meet, `tune`,
//! `rollback`, and `destroy` removes what they made. A command runs in a [`session::Session`]
//! (config, account, one handle for the clients).
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
pub mod monitor;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod registry;
pub mod release;
pub mod rollback;
pub mod session;
pub mod smoke;
pub mod status;
pub mod tune;
