//! Our optimizers, written from their textbook formulas (the seed's §4.1), working in place on
//! flat `f32` parameter buffers so they know nothing of the model or of candle.

#![warn(missing_docs)]

pub mod adam;
pub mod sgd;

pub use adam::Adam;
pub use sgd::Sgd;

use crate::simd::Isa;
use rayon::prelude::*;

/// Why a step was refused; the parameters and the optimizer's state are left as they were.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are what the messages say
pub enum OptimError {
    /// The step got a different number of gradients than parameters.
    #[error("{params} parameter buffers but {grads} gradients")]
    CountMismatch { params: usize, grads: usize },
    /// A gradient's length differs from its parameter's.
    #[error("parameter {index} has {param} values but its gradient has {grad}")]
    LengthMismatch {
        index: usize,
        param: usize,
        grad: usize,
    },
    /// The number of parameters changed since the first step (the state is per parameter).
    #[error("{before} parameters at the first step, {now} now")]
    CountChanged { before: usize, now: usize },
    /// A parameter's length changed since the first step.
    #[error("parameter {index} had {before} values at the first step and has {now} now")]
    ShapeChanged {
        index: usize,
        before: usize,
        now: usize,
    },
}

/// A first-order optimizer whose update is elementwise: each value moves by its own gradient
/// and its own state only. So a step can be begun once and applied to any split of the
/// parameters, in any order, on any thread — which lets the training step fold the update of
/// fc1's weights into the backward pass that makes their gradient, while it is still in cache.
pub trait Optimizer: Send {
    /// Begins a step over parameters of these lengths, in a fixed order: the per-parameter
    /// state is made at the first step and must keep its lengths after that.
    fn begin_step(&mut self, lengths: &[usize]) -> Result<Step<'_>, OptimError>;

    /// Its learning rate (what the model card records).
    fn learning_rate(&self) -> f64;

    /// `params[i]` is updated in place from `grads[i]`: [`Optimizer::begin_step`], then each
    /// parameter's [`Piece`], the large ones in parallel chunks.
    fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) -> Result<(), OptimError> {
        if params.len() != grads.len() {
            return Err(OptimError::CountMismatch {
                params: params.len(),
                grads: grads.len(),
            });
        }
        for (index, (p, g)) in params.iter().zip(grads).enumerate() {
            if p.len() != g.len() {
                return Err(OptimError::LengthMismatch {
                    index,
                    param: p.len(),
                    grad: g.len(),
                });
            }
        }
        let lengths: Vec<usize> = params.iter().map(|p| p.len()).collect();
        let mut step = self.begin_step(&lengths)?;
        let isa = Isa::detect();
        for (index, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let piece = step.take(index);
            if p.len() <= CHUNK {
                // Not worth a hand-off to another thread.
                piece.apply(isa, p, g);
                continue;
            }
            piece
                .chunks(CHUNK)
                .into_par_iter()
                .zip(p.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK))
                .for_each(|((piece, p), g)| piece.apply(isa, p, g));
        }
        Ok(())
    }
}

/// Values per parallel task in [`Optimizer::step`]: large enough to amortise scheduling, small
/// enough to split fc1's 692k weights over the cores.
const CHUNK: usize = 32 * 1024;

/// A step's update rule, with this step's constants.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Sgd(sgd::Rule),
    Adam(adam::Rule),
}

/// One step, begun: each parameter's update.
pub struct Step<'a> {
    pieces: Vec<Option<Piece<'a>>>,
}

impl<'a> Step<'a> {
    /// A step of `rule` over parameters with this state each (as long as the parameter, or
    /// empty where the rule keeps none, and then `lengths` gives the lengths).
    fn with_state(
        rule: Rule,
        lengths: &[usize],
        state: impl Iterator<Item = [&'a mut [f32]; 2]>,
    ) -> Self {
        Self {
            pieces: lengths
                .iter()
                .zip(state)
                .map(|(&len, state)| Some(Piece::new(rule, len, state)))
                .collect(),
        }
    }

    /// Parameter `index`'s update.
    ///
    /// # Panics
    /// If taken twice, or past the lengths the step was begun with (a bug of the caller).
    pub fn take(&mut self, index: usize) -> Piece<'a> {
        self.pieces
            .get_mut(index)
            .and_then(Option::take)
            .unwrap_or_else(|| panic!("parameter {index}'s update taken twice or not begun"))
    }
}

/// The update of a run of one parameter's values: the rule and that run's state.
pub struct Piece<'a> {
    rule: Rule,
    len: usize,
    /// SGD with momentum: the velocity; Adam: the two moments; unused ones are empty.
    state: [&'a mut [f32]; 2],
}

impl<'a> Piece<'a> {
    fn new(rule: Rule, len: usize, state: [&'a mut [f32]; 2]) -> Self {
        Self { rule, len, state }
    }

    /// How many values this piece updates.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it updates none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces of the first `mid` values and of the rest.
    pub fn split_at(self, mid: usize) -> (Piece<'a>, Piece<'a>) {
        let mid = mid.min(self.len);
        let split = |s: &'a mut [f32]| {
            if s.is_empty() {
                (<&mut [f32]>::default(), <&mut [f32]>::default())
            } else {
                s.split_at_mut(mid)
            }
        };
        let [a, b] = self.state;
        let ((a1, a2), (b1, b2)) = (split(a), split(b));
        (
            Piece::new(self.rule, mid, [a1, b1]),
            Piece::new(self.rule, self.len - mid, [a2, b2]),
        )
    }

    /// Consecutive pieces of `size` values (the last may be shorter).
    pub fn chunks(self, size: usize) -> Vec<Piece<'a>> {
        let mut out = Vec::with_capacity(self.len.div_ceil(size.max(1)));
        let mut rest = self;
        while rest.len > size {
            let (head, tail) = rest.split_at(size);
            out.push(head);
            rest = tail;
        }
        out.push(rest);
        out
    }

    /// Updates `params` from `grads`, both as long as the piece, with the kernels built for
    /// `isa` (the caller's, so that a model run with one instruction set updates with it, and
    /// tests can compare every build).
    ///
    /// # Panics
    /// If the lengths differ (a bug of the caller: [`Optimizer::step`] checks them first).
    pub fn apply(self, isa: Isa, params: &mut [f32], grads: &[f32]) {
        assert!(
            params.len() == self.len && grads.len() == self.len,
            "an update of {} values applied to {} values and {} gradients",
            self.len,
            params.len(),
            grads.len()
        );
        let [a, b] = self.state;
        match self.rule {
            Rule::Sgd(rule) => sgd::update(isa, &rule, params, grads, a),
            Rule::Adam(rule) => adam::update(isa, &rule, params, grads, a, b),
        }
    }
}

/// Creates (at the first step) or checks one zeroed state buffer per parameter. Shared by the
/// optimizers that keep per-parameter state.
fn ensure_state(state: &mut Vec<Vec<f32>>, lengths: &[usize]) -> Result<(), OptimError> {
    if state.is_empty() {
        *state = lengths.iter().map(|&n| vec![0.0; n]).collect();
        return Ok(());
    }
    if state.len() != lengths.len() {
        return Err(OptimError::CountChanged {
            before: state.len(),
            now: lengths.len(),
        });
    }
    for (index, (s, &now)) in state.iter().zip(lengths).enumerate() {
        if s.len() != now {
            return Err(OptimError::ShapeChanged {
                index,
                before: s.len(),
                now,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1000 parameters and `steps` gradients of them.
    fn fixture(steps: usize) -> (Vec<f32>, Vec<Vec<f32>>) {
        let p0 = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let grads = (0..steps)
            .map(|s| {
                (0..1000)
                    .map(|i| ((i * (s + 2)) as f32 * 0.11).cos())
                    .collect()
            })
            .collect();
        (p0, grads)
    }

    /// One of each optimizer the crate has, with settings that move the parameters visibly.
    fn optimizers() -> [Box<dyn Optimizer>; 3] {
        [
            Box::new(Adam::new(1e-2)),
            Box::new(Sgd::with_momentum(0.1, 0.9)),
            Box::new(Sgd::new(0.1)),
        ]
    }

    /// A step applied in pieces, in any order, is the step applied whole.
    #[test]
    fn pieces_in_any_order_make_the_whole_step() {
        let (p0, grads) = fixture(3);
        for (mut whole, mut pieces) in optimizers().into_iter().zip(optimizers()) {
            let (mut a, mut b) = (p0.clone(), p0.clone());
            for g in &grads {
                whole.step(&mut [&mut a[..]], &[g]).unwrap();
                let mut step = pieces.begin_step(&[b.len()]).unwrap();
                let mut parts = step.take(0).chunks(300);
                assert_eq!(
                    parts.iter().map(Piece::len).collect::<Vec<_>>(),
                    [300, 300, 300, 100]
                );
                // Backwards, to show order does not matter.
                let mut at = b.len();
                while let Some(part) = parts.pop() {
                    let from = at - part.len();
                    part.apply(Isa::detect(), &mut b[from..at], &g[from..at]);
                    at = from;
                }
            }
            assert_eq!(a, b);
            assert_ne!(a, p0);
        }
    }

    // Every build of the update kernels (portable, AVX2, AVX-512, NEON: a test each) follows
    // the portable one: the same formulas, FMA rounding apart.
    crate::simd::isa_test!(
        updates_as_the_portable_build,
        super::updates_as_the_portable_build_on
    );

    fn updates_as_the_portable_build_on(isa: Isa) {
        let (p0, grads) = fixture(4);
        let run = |isa: Isa, opt: &mut dyn Optimizer| {
            let mut p = p0.clone();
            for g in &grads {
                opt.begin_step(&[p.len()])
                    .unwrap()
                    .take(0)
                    .apply(isa, &mut p, g);
            }
            p
        };
        let portable = Isa::available()[0];
        assert_eq!(portable.to_string(), "portable");
        for (k, _) in optimizers().iter().enumerate() {
            let reference = run(portable, &mut *optimizers().into_iter().nth(k).unwrap());
            assert_ne!(reference, p0);
            let got = run(isa, &mut *optimizers().into_iter().nth(k).unwrap());
            let worst = got
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "optimizer {k} on {isa}: off by {worst}");
        }
    }

    #[test]
    fn a_changed_parameter_count_is_an_error() {
        let mut adam = Adam::new(1e-3);
        adam.begin_step(&[3, 2]).unwrap();
        assert!(matches!(
            adam.begin_step(&[3]).err(),
            Some(OptimError::CountChanged { before: 2, now: 1 })
        ));
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::Optimizer;

    /// Runs `opt` over the gradient sequence and returns the parameters after each step.
    pub fn run(opt: &mut dyn Optimizer, start: &[f32], grads: &[&[f32]]) -> Vec<Vec<f32>> {
        let mut p = start.to_vec();
        grads
            .iter()
            .map(|g| {
                opt.step(&mut [&mut p[..]], &[g]).unwrap();
                p.clone()
            })
            .collect()
    }

    pub fn assert_close(actual: &[f32], expected: &[f64]) {
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!(
                (*a as f64 - e).abs() <= 1e-6,
                "value {i}: {a} vs hand-computed {e}"
            );
        }
    }
}
