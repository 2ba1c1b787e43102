//! The deploy pipeline, one module per stage: build → image → registry (+ ecr) → lambda
//! (+ iam, smoke) → apigw → logs (monitor). A stage takes the previous one's outputs, never
//! its internals; `release` chains lambda, iam, smoke and logs for one function, `doctor`
//! reads what each would meet, and `destroy` removes what they made.

#![warn(missing_docs)]

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
