//! Our optimizers, written from their textbook formulas (the seed's §4.1), working in place on
//! flat `f32` parameter buffers so they know nothing of the model or of candle.

pub mod adam;
pub mod sgd;

pub use adam::Adam;
pub use sgd::Sgd;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptimError {
    #[error("{params} parameter buffers but {grads} gradients")]
    CountMismatch { params: usize, grads: usize },
    #[error("parameter {index} has {param} values but its gradient has {grad}")]
    LengthMismatch {
        index: usize,
        param: usize,
        grad: usize,
    },
    #[error("parameter {index} had {before} values at the first step and has {now} now")]
    ShapeChanged {
        index: usize,
        before: usize,
        now: usize,
    },
}

/// A first-order optimizer: one call updates every parameter buffer from its gradient.
pub trait Optimizer: Send {
    /// `params[i]` is updated in place from `grads[i]`; the buffers must keep their lengths
    /// from one step to the next, since per-parameter state (momentum, moments) follows them.
    fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) -> Result<(), OptimError>;

    fn learning_rate(&self) -> f64;
}

/// Checks that `params` and `grads` pair up, and creates (or checks) one zeroed state buffer
/// per parameter. Shared by the optimizers that keep per-parameter state.
fn ensure_state(
    state: &mut Vec<Vec<f32>>,
    params: &[&mut [f32]],
    grads: &[&[f32]],
) -> Result<(), OptimError> {
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
    if state.is_empty() {
        *state = params.iter().map(|p| vec![0.0; p.len()]).collect();
    } else {
        if state.len() != params.len() {
            return Err(OptimError::CountMismatch {
                params: params.len(),
                grads: state.len(),
            });
        }
        for (index, (s, p)) in state.iter().zip(params).enumerate() {
            if s.len() != p.len() {
                return Err(OptimError::ShapeChanged {
                    index,
                    before: s.len(),
                    now: p.len(),
                });
            }
        }
    }
    Ok(())
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
