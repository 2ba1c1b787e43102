//! How the command-line tools (`lambda-cnn`, `deploy`) print their results: for people, or with
//! the global `--json` one JSON object per line. A result is one value that is both `Display`
//! and `Serialize`, printed here (cargo-lambda's `OutputFormat` is the model); progress and
//! warnings go to stderr.

#![warn(missing_docs)]

use serde::Serialize;
use std::fmt::Display;

/// Where results go: text, or JSON lines with `json`.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// One JSON object per line instead of text.
    pub json: bool,
}

impl Output {
    /// Prints `value`: its `Display` for people, its JSON (one line) with `--json`.
    pub fn print<T: Display + Serialize>(&self, value: &T) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string(value)?);
        } else {
            println!("{value}");
        }
        Ok(())
    }
}
