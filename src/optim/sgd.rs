//! Stochastic gradient descent: θ ← θ − α·∇J(θ) (the seed's formula), with optional momentum
//! in the form PyTorch uses: v ← μ·v + ∇J(θ); θ ← θ − α·v. With μ = 0 the two coincide.

use super::{ensure_state, OptimError, Optimizer, Step};
use crate::simd::multiversion;

/// SGD, with optional momentum: its learning rate, momentum and per-parameter velocity.
#[derive(Debug, Clone)]
pub struct Sgd {
    lr: f32,
    momentum: f32,
    velocity: Vec<Vec<f32>>,
}

impl Sgd {
    /// Plain SGD with learning rate `lr`: the seed's formula.
    pub fn new(lr: f64) -> Self {
        Self::with_momentum(lr, 0.0)
    }

    /// SGD with momentum `momentum` (μ; 0 is plain SGD), as PyTorch applies it.
    pub fn with_momentum(lr: f64, momentum: f64) -> Self {
        Self {
            lr: lr as f32,
            momentum: momentum as f32,
            velocity: Vec::new(),
        }
    }
}

/// One step's constants.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    lr: f32,
    momentum: f32,
}

multiversion! {
    /// The update of one run of values; `velocity` is empty for plain SGD.
    pub(super) fn update<FMA, WIDE>(rule: &Rule, p: &mut [f32], g: &[f32], velocity: &mut [f32]) {
        let Rule { lr, momentum } = *rule;
        if velocity.is_empty() {
            for (p, g) in p.iter_mut().zip(g) {
                *p -= lr * g;
            }
            return;
        }
        for ((p, g), v) in p.iter_mut().zip(g).zip(velocity.iter_mut()) {
            *v = momentum * *v + g;
            *p -= lr * *v;
        }
    }
}

impl Optimizer for Sgd {
    fn begin_step(&mut self, lengths: &[usize]) -> Result<Step<'_>, OptimError> {
        let rule = super::Rule::Sgd(Rule {
            lr: self.lr,
            momentum: self.momentum,
        });
        if self.momentum == 0.0 {
            // Plain SGD keeps no state.
            return Ok(Step::with_state(
                rule,
                lengths,
                std::iter::repeat_with(|| [<&mut [f32]>::default(), <&mut [f32]>::default()]),
            ));
        }
        ensure_state(&mut self.velocity, lengths)?;
        Ok(Step::with_state(
            rule,
            lengths,
            self.velocity
                .iter_mut()
                .map(|v| [&mut v[..], <&mut [f32]>::default()]),
        ))
    }

    fn learning_rate(&self) -> f64 {
        self.lr as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_util::{assert_close, run};

    #[test]
    fn plain_sgd_follows_the_seed_formula() {
        // θ1 = θ0 − 0.1·g: 1 − 0.05 = 0.95; −2 + 0.1 = −1.9; then again from there.
        let steps = run(
            &mut Sgd::new(0.1),
            &[1.0, -2.0],
            &[&[0.5, -1.0], &[0.2, 0.4]],
        );
        assert_close(&steps[0], &[0.95, -1.9]);
        assert_close(&steps[1], &[0.93, -1.94]);
    }

    #[test]
    fn momentum_accumulates_velocity() {
        // v1 = g1 = (0.5, −1); θ1 = (0.95, −1.9).
        // v2 = 0.9·v1 + g2 = (0.45 + 0.2, −0.9 + 0.4) = (0.65, −0.5); θ2 = (0.885, −1.85).
        let steps = run(
            &mut Sgd::with_momentum(0.1, 0.9),
            &[1.0, -2.0],
            &[&[0.5, -1.0], &[0.2, 0.4]],
        );
        assert_close(&steps[0], &[0.95, -1.9]);
        assert_close(&steps[1], &[0.885, -1.85]);
    }

    #[test]
    fn mismatched_buffers_are_errors_not_panics() {
        let mut p = [0.0f32; 3];
        let err = Sgd::new(0.1)
            .step(&mut [&mut p[..]], &[&[1.0, 2.0]])
            .unwrap_err();
        assert_eq!(
            err,
            OptimError::LengthMismatch {
                index: 0,
                param: 3,
                grad: 2
            }
        );
        let mut opt = Sgd::with_momentum(0.1, 0.9);
        opt.step(&mut [&mut p[..]], &[&[1.0, 2.0, 3.0]]).unwrap();
        let mut q = [0.0f32; 2];
        let err = opt.step(&mut [&mut q[..]], &[&[1.0, 2.0]]).unwrap_err();
        assert!(matches!(
            err,
            OptimError::ShapeChanged {
                before: 3,
                now: 2,
                ..
            }
        ));
    }
}
