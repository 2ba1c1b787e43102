//! How the command-line tools report on stderr: log lines, and an error as one line with the
//! whole chain of causes.

#![warn(missing_docs)]

/// Log lines on stderr (stdout carries results), at the level in `RUST_LOG`, default `warn`.
pub fn init_stderr_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
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
