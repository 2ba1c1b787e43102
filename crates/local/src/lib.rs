//! lambda-cnn's local stack: what stands in for Lambda on this machine.
//!
//! - [`dataplane`]: Lambda's Invoke API on 127.0.0.1, running each released version's image
//!   under AWS's Runtime Interface Emulator in Docker, sized as Lambda sizes it, from what the
//!   AWS emulator (moto, LocalStack) records. `make run`, `make tune` and the tests use it.
//! - [`run`]: `make run` (and `make tune`, `make batch`, `make bench-seed`): the whole
//!   pipeline on the [`stack`] of stand-ins, with real test digits and a short training run.
//! - [`serve`]: `make serve`, the digit page under the Runtime API emulator.
//! - [`procs`]: the child processes they start, and stop together.
//!
//! The `local` binary parses and calls these; docs/local.md explains the stack.

/// `println!` that cannot panic. Rust's panics when stdout is gone (`local run | head`, a closed
/// terminal); a run must go on and stop what it started, so a lost line is only lost.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that cannot panic, for the same reason as [`outln!`].
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod dataplane;
pub mod digits;
pub mod http;
pub mod procs;
pub mod run;
pub mod serve;
pub mod stack;
