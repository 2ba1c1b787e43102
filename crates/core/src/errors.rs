//! How the command-line tools report on stderr: log lines, and an error as one line with the
//! whole chain of causes.

#![warn(missing_docs)]

/// What is logged without `RUST_LOG`: our warnings, and none of the AWS SDK's own lines. The
/// SDK warns (with Debug dumps) about every provider of the credential chain that did not
/// answer, before the error the tool reports in one line says the same; `RUST_LOG=aws_config=debug`
/// brings them back.
pub const DEFAULT_LOG_FILTER: &str =
    "warn,aws_config=off,aws_smithy_runtime=off,aws_smithy_runtime_api=off,aws_runtime=off,aws_sdk_sts=off,aws_sdk_sso=off";

/// Log lines on stderr (stdout carries results), at the level in `RUST_LOG`, default
/// [`DEFAULT_LOG_FILTER`]; colours only on a terminal, and never with `NO_COLOR` set.
pub fn init_stderr_logging() {
    init_stderr_logging_at(0);
}

/// [`init_stderr_logging`] with `-v` given `verbose` times: 1 shows the SDK's own warnings
/// (and info lines: retries, credential providers tried), 2 or more its debug lines.
/// `RUST_LOG` decides when set.
pub fn init_stderr_logging_at(verbose: u8) {
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let default = match verbose {
        0 => DEFAULT_LOG_FILTER,
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
}

/// What failed and why, each cause said once (many error types repeat their cause in their own
/// message), on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    chain(e.as_ref())
}

/// [`one_line`] for any error: `e` and its sources, each once, joined by ": ". The AWS SDK's
/// own rendering (`DisplayErrorContext`) ends with a Debug dump no user should have to read;
/// this is what the deploy and the S3 store say instead.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string().replace('\n', " ");
        let text = text.trim();
        if !line.contains(text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(text);
        }
        next = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_once_on_one_line() {
        let io = std::io::Error::other("connection refused");
        let e = anyhow::Error::new(io)
            .context("logging in: connection refused")
            .context("failed to push\nthe image");
        assert_eq!(
            one_line(&e),
            "failed to push the image: logging in: connection refused"
        );
    }
}
