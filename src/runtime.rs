//! Process set-up shared by every binary that runs the model.

/// The time left until an invocation's deadline, from the runtime's
/// `Lambda-Runtime-Deadline-Ms` at `now`. Lambda sends epoch milliseconds; `cargo lambda watch`
/// sends the timeout itself (e.g. 600000), so a value too small to be a date (before 2001) is
/// taken as milliseconds from now. `None`: no deadline (0).
pub fn time_left(deadline_ms: u64, now: std::time::SystemTime) -> Option<std::time::Duration> {
    use std::time::{Duration, SystemTime};
    const YEAR_2001_MS: u64 = 1_000_000_000_000;
    match deadline_ms {
        0 => None,
        ms if ms < YEAR_2001_MS => Some(Duration::from_millis(ms)),
        ms => Some(
            (SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
                .duration_since(now)
                .unwrap_or_default(),
        ),
    }
}

/// The instant `deadline_ms` (as [`time_left`] reads it) falls at; an hour from now when
/// there is none.
pub fn deadline_instant(deadline_ms: u64) -> std::time::Instant {
    let left = time_left(deadline_ms, std::time::SystemTime::now())
        .unwrap_or(std::time::Duration::from_secs(3600));
    std::time::Instant::now() + left
}

/// Fixes the size of candle's thread pool once, before any tensor work. Without
/// `RAYON_NUM_THREADS` candle asks the OS for the CPU count (reading /proc/cpuinfo) on every
/// parallel op, dozens of times per forward pass. Call first thing in `main`, before any
/// thread is spawned; an explicit `RAYON_NUM_THREADS` is respected.
///
/// It also builds the rayon pool (candle's and ours) with denormals flushed on every worker;
/// see [`flush_denormals`].
pub fn init_threads() -> usize {
    let n = match std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        Some(n) => n,
        None => {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            // Single-threaded at this point (documented precondition), so setting the
            // variable races with nothing.
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            n
        }
    };
    // candle 0.11 runs elementwise ops on its own pool, whose workers spin 25,000 times before
    // sleeping, taking a core from the rayon workers (gemm, our ops) on a small machine.
    // Measured on 2 cores, 5 alternating runs: 5.6k → 6.2k training samples/s (median) at 10.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "10");
    }
    flush_denormals();
    // Fails only if the pool already exists; then it keeps the settings it was built with.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .start_handler(|_| flush_denormals())
        .build_global();
    n
}

/// Treats subnormal floats as zero on this thread (x86-64's FTZ and DAZ bits). Once training
/// has run a while, Adam's first moment of the many weights that rarely get a gradient decays
/// through the subnormal range, where every operation is ~100× slower: measured here, an
/// epoch went from 3.3 s to 8.8 s after the first. TensorFlow, which the seed runs, flushes
/// subnormals on its CPU threads too. A no-op on other architectures.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    {
        const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr/ldmxcsr read and write this thread's SSE control register, which
        // exists on every x86-64 CPU; only the two flush bits are changed.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
            csr |= FTZ_DAZ;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
        }
    }
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
