//! Process set-up shared by every binary that runs the model.

/// Fixes the size of candle's thread pool once, before any tensor work. Without
/// `RAYON_NUM_THREADS` candle asks the OS for the CPU count (reading /proc/cpuinfo) on every
/// parallel op, dozens of times per forward pass. Call first thing in `main`, before any
/// thread is spawned; an explicit `RAYON_NUM_THREADS` is respected.
pub fn init_threads() -> usize {
    if let Some(n) = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n;
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Single-threaded at this point (documented precondition), so setting the variable races
    // with nothing.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    n
}

/// JSON logs on stdout, one object per line (what CloudWatch Logs Insights parses), at the
/// level in `RUST_LOG` or `AWS_LAMBDA_LOG_LEVEL` (default info). The Lambda runtime's span
/// carries the request id into each line.
pub fn init_json_logging() {
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|l| l.to_ascii_lowercase()))
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .without_time()
        .try_init();
}
