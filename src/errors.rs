//! How the command-line tools report on stderr: log lines, and an error as one line with the
//! whole chain of causes.

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
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.contains(text.trim()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text.trim());
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
