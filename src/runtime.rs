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
