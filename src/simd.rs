//! Which vector instructions the kernels run with, picked once at run time, and a macro that
//! compiles one kernel body for each.
//!
//! Why not one build for the host: the same binary runs on a build machine, in CI and on
//! Lambda's x86_64 hosts, which differ (some have AVX-512, all have AVX2 + FMA). The kernels
//! are mostly plain loops over fixed-size arrays that LLVM vectorises; compiled inside a
//! `#[target_feature]` function they use 512- or 256-bit registers and fused multiply-adds.
//! The convolution/pooling kernels also have hand-written intrinsics — AVX2 and AVX-512
//! (`model/conv_pool/x86.rs`), NEON (`model/conv_pool/aarch64.rs`) — tested bit-identical to
//! the loops. On AArch64 the loops are compiled for the baseline, which has NEON and fused
//! multiply-add: there [`Isa`]s differ only in whether the convolution runs the intrinsics.

#![warn(missing_docs)]

/// An instruction set the kernels are compiled for, one this CPU has: the only ways to get one
/// are [`Isa::detect`] and [`Isa::available`], which is what makes running a kernel safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isa(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[allow(dead_code)] // each target builds the kinds of its own architecture
pub(crate) enum Kind {
    /// The target's loops, compiled for its baseline: SSE2 on x86-64 (multiply, then add);
    /// NEON with fused multiply-add on AArch64.
    Portable,
    /// AArch64: the NEON intrinsics kernels.
    Neon,
    /// AVX2 with FMA.
    Avx2,
    /// AVX-512 (F, VL) with FMA.
    Avx512,
}

impl Isa {
    /// The best this CPU has; `LAMBDA_CNN_ISA=portable|avx2|neon` caps it (to compare, or to
    /// sidestep a CPU that down-clocks under 512-bit work).
    pub fn detect() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let cap = match std::env::var("LAMBDA_CNN_ISA").ok().as_deref() {
                Some("portable") => Kind::Portable,
                Some("neon") => Kind::Neon,
                Some("avx2") => Kind::Avx2,
                _ => Kind::Avx512,
            };
            Self::available()
                .into_iter()
                .rfind(|isa| isa.0 <= cap)
                .unwrap_or(Isa(Kind::Portable))
        })
    }

    /// Every instruction set this CPU can run, the baseline first.
    pub fn available() -> Vec<Isa> {
        #[cfg_attr(
            not(any(target_arch = "x86_64", target_arch = "aarch64")),
            allow(unused_mut)
        )]
        let mut isas = vec![Isa(Kind::Portable)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                isas.push(Isa(Kind::Avx2));
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                {
                    isas.push(Isa(Kind::Avx512));
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            isas.push(Isa(Kind::Neon));
        }
        isas
    }

    /// Runs `run` on the instruction set `name` (as [`Isa`] displays it), or records why it
    /// cannot: this CPU lacks it. See [`isa_test!`].
    #[cfg(test)]
    pub(crate) fn test(name: &str, run: impl FnOnce(Isa)) {
        match Self::available()
            .into_iter()
            .find(|i| i.to_string() == name)
        {
            Some(isa) => run(isa),
            None => skip(
                name,
                &format!("the {name} kernels are not tested: this CPU lacks {name}"),
            ),
        }
    }

    pub(crate) fn kind(self) -> Kind {
        self.0
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Kind::Portable => "portable",
            Kind::Neon => "neon",
            Kind::Avx2 => "avx2",
            Kind::Avx512 => "avx512",
        })
    }
}

/// The capabilities `LAMBDA_CNN_REQUIRE` (comma-separated: `avx2`, `avx512`, `neon`, `docker`,
/// `chromium`, `arm64`, `seed`) says this machine has: a test that would skip for want of one of them fails
/// instead (`.ci/run` sets it from what the machine has), so a kernel or a stage cannot go
/// untested unnoticed.
pub fn required(capability: &str) -> bool {
    std::env::var("LAMBDA_CNN_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .any(|c| c.trim() == capability)
}

/// A test that cannot run for want of `capability` says so: it fails where
/// `LAMBDA_CNN_REQUIRE` names the capability (the machine has it, so the skip would hide a
/// break), and otherwise prints `SKIPPED: why` and appends that line to the file
/// `LAMBDA_CNN_SKIP_LOG` names, so that `make test` ends with the count of skips and their
/// reasons instead of burying them in captured output.
pub fn skip(capability: &str, why: &str) {
    assert!(
        !required(capability),
        "LAMBDA_CNN_REQUIRE names {capability}, but: {why}"
    );
    let line = format!("SKIPPED: {why}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("LAMBDA_CNN_SKIP_LOG") {
        use std::io::Write;
        // One write of one line: parallel tests append whole lines.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            eprintln!("cannot record the skip in {}: {e}", path.to_string_lossy());
        }
    }
}

/// Defines `mod $name` with one test per instruction set of this architecture, named for it
/// (`…::$name::portable`, `avx2`, `avx512`, `neon`), as candle's `test_device!` names a test
/// per device: a failure names its instruction set, and one the CPU lacks is a recorded skip
/// ([`skip`]; a failure where `LAMBDA_CNN_REQUIRE` names it), never a silent pass. `$run` is
/// the test for one [`Isa`] (a closure, written as in the enclosing module).
#[cfg(test)]
macro_rules! isa_test {
    ($name:ident, $run:expr) => {
        mod $name {
            #[test]
            fn portable() {
                $crate::simd::Isa::test("portable", $run)
            }
            #[cfg(target_arch = "x86_64")]
            #[test]
            fn avx2() {
                $crate::simd::Isa::test("avx2", $run)
            }
            #[cfg(target_arch = "x86_64")]
            #[test]
            fn avx512() {
                $crate::simd::Isa::test("avx512", $run)
            }
            #[cfg(target_arch = "aarch64")]
            #[test]
            fn neon() {
                $crate::simd::Isa::test("neon", $run)
            }
        }
    };
}
#[cfg(test)]
pub(crate) use isa_test;

/// `a·b + c`, fused where the instruction set has FMA (a library call otherwise, so the
/// portable build multiplies and adds). Only the model's kernels (feature `ml`) use it.
#[cfg(feature = "ml")]
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Defines `fn name(isa: Isa, args…) -> ret` that runs `body` compiled for `isa`. The body sees
/// `const $fma: bool` (pass it to [`madd`]) and `const $wide: bool`, true where there are 32
/// vector registers of 16 floats (AVX-512), so it can size its register blocks.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident<$fma:ident, $wide:ident>($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::simd::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<const $fma: bool, const $wide: bool>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx512($($arg: $ty),*) $(-> $ret)? { body::<true, true>($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx2($($arg: $ty),*) $(-> $ret)? { body::<true, false>($($arg),*) }
            match isa.kind() {
                // SAFETY: an `Isa` exists only for instruction sets the CPU has (its
                // constructors check).
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Kind::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as for AVX-512 above.
                $crate::simd::Kind::Avx2 => unsafe { avx2($($arg),*) },
                // AArch64's baseline has fused multiply-add; x86-64's has not.
                _ => body::<{ cfg!(target_arch = "aarch64") }, false>($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    /// What `LAMBDA_CNN_REQUIRE` names must be what the kernel tests get from
    /// [`Isa::available`]: otherwise they would test fewer builds than the machine runs.
    #[test]
    fn every_required_instruction_set_is_available_to_the_kernel_tests() {
        let available: Vec<String> = Isa::available().iter().map(Isa::to_string).collect();
        for isa in ["avx2", "avx512", "neon"] {
            assert!(
                !required(isa) || available.iter().any(|a| a == isa),
                "LAMBDA_CNN_REQUIRE names {isa}, but the kernel tests would run only {available:?}"
            );
        }
    }
}
