//! Adam (Kingma & Ba, 2015):
//!
//! ```text
//! m ← β1·m + (1 − β1)·g          v ← β2·v + (1 − β2)·g²
//! m̂ = m / (1 − β1ᵗ)              v̂ = v / (1 − β2ᵗ)
//! θ ← θ − α·m̂ / (√v̂ + ε)
//! ```
//!
//! The seed (§4.1) writes the same update without the bias correction, θ ← θ − α·m/(√v + ε).
//! Because m and v start at zero, the uncorrected estimates are too small in the first
//! steps (m by a factor 1 − β1ᵗ, √v by √(1 − β2ᵗ)), and not by the same amount: the seed's
//! first step is (1 − β1)/√(1 − β2) = 0.1/√0.001 ≈ 3.16 times the corrected one, and the two
//! only agree once β2ᵗ has decayed (a few thousand steps, about one MNIST epoch at batch 32).
//! Keras, which the seed runs, does apply the correction; so do we by default.
//! `Adam::seed_formula` gives the article's variant for comparison. Keras' default ε is 1e-7
//! (PyTorch's 1e-8): we follow Keras, since the seed's numbers come from it.

use super::{ensure_state, OptimError, Optimizer, Step};
use crate::simd::multiversion;

/// Adam: its hyper-parameters, step count and per-parameter first and second moments.
#[derive(Debug, Clone)]
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f32,
    bias_correction: bool,
    t: i32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Adam {
    /// Adam with Keras' defaults: β1 = 0.9, β2 = 0.999, ε = 1e-7, bias-corrected.
    pub fn new(lr: f64) -> Self {
        Self::with_params(lr, 0.9, 0.999, 1e-7)
    }

    /// Adam with the given learning rate, moment decays β1, β2 and ε, bias-corrected.
    pub fn with_params(lr: f64, beta1: f64, beta2: f64, eps: f64) -> Self {
        Self {
            lr,
            beta1,
            beta2,
            eps: eps as f32,
            bias_correction: true,
            t: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }

    /// The article's formula: the same moments, no bias correction.
    pub fn seed_formula(lr: f64) -> Self {
        Self {
            bias_correction: false,
            ..Self::new(lr)
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> i32 {
        self.t
    }
}

/// One step's constants.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    b1: f32,
    b2: f32,
    inv_bc1: f32,
    inv_bc2: f32,
    lr: f32,
    eps: f32,
}

multiversion! {
    /// The update of one run of values. Compiled per instruction set for the width (16 values
    /// at once with AVX-512): the arithmetic is as written, multiplies and adds not fused, so
    /// every build rounds alike.
    pub(super) fn update<FMA, WIDE>(rule: &Rule, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let Rule { b1, b2, inv_bc1, inv_bc2, lr, eps } = *rule;
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let m_hat = *m * inv_bc1;
            let v_hat = *v * inv_bc2;
            *p -= lr * m_hat / (v_hat.sqrt() + eps);
        }
    }
}

impl Optimizer for Adam {
    fn begin_step(&mut self, lengths: &[usize]) -> Result<Step<'_>, OptimError> {
        ensure_state(&mut self.m, lengths)?;
        ensure_state(&mut self.v, lengths)?;
        self.t += 1;
        let (bc1, bc2) = if self.bias_correction {
            (1.0 - self.beta1.powi(self.t), 1.0 - self.beta2.powi(self.t))
        } else {
            (1.0, 1.0)
        };
        let rule = Rule {
            b1: self.beta1 as f32,
            b2: self.beta2 as f32,
            inv_bc1: (1.0 / bc1) as f32,
            inv_bc2: (1.0 / bc2) as f32,
            lr: self.lr as f32,
            eps: self.eps,
        };
        Ok(Step::with_state(
            super::Rule::Adam(rule),
            lengths,
            self.m
                .iter_mut()
                .zip(&mut self.v)
                .map(|(m, v)| [&mut m[..], &mut v[..]]),
        ))
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_util::{assert_close, run};

    const GRADS: [&[f32]; 3] = [&[0.5, -0.1, 0.0], &[0.25, 0.3, 0.0], &[-0.4, 0.3, 1e-3]];

    #[test]
    fn bias_corrected_steps_match_hand_computation() {
        // Step 1: m̂ = g, v̂ = g², so θ moves by α·g/(|g| + ε) ≈ α·sign(g):
        //   1 − 1e-3·0.5/(0.5 + 1e-7) = 0.9990000002.
        // Step 2, first value: m = 0.9·0.05 + 0.1·0.25 = 0.07, v = 0.999·2.5e-4 + 1e-3·0.0625
        //   = 3.1225e-4; m̂ = 0.07/0.19, v̂ = 3.1225e-4/0.001999; θ = 0.9980678208.
        // A zero gradient leaves θ where it is until the third step moves it.
        let steps = run(&mut Adam::new(1e-3), &[1.0, -2.0, 0.0], &GRADS);
        assert_close(&steps[0], &[0.9990000002, -1.9990000010, 0.0]);
        assert_close(&steps[1], &[0.9980678208, -1.9994941906, 0.0]);
        assert_close(&steps[2], &[0.9978539460, -2.0002110464, -0.0006387030]);
    }

    #[test]
    fn seed_formula_omits_bias_correction() {
        // Step 1: m = 0.05, v = 2.5e-4: θ = 1 − 1e-3·0.05/(0.0158113883 + 1e-7) = 0.9968377423.
        let steps = run(&mut Adam::seed_formula(1e-3), &[1.0, -2.0, 0.0], &GRADS);
        assert_close(&steps[0], &[0.9968377423, -1.9968378223, 0.0]);
        assert_close(&steps[1], &[0.9928763819, -1.9989379063, 0.0]);
        assert_close(&steps[2], &[0.9918176562, -2.0024864867, -0.0031523092]);
    }

    #[test]
    fn counts_steps_and_keeps_state_per_parameter() {
        let mut opt = Adam::new(1e-3);
        let mut a = [1.0f32];
        let mut b = [1.0f32, 1.0];
        opt.step(&mut [&mut a[..], &mut b[..]], &[&[0.5], &[0.5, 0.0]])
            .unwrap();
        assert_eq!(opt.steps(), 1);
        // The same gradient gives the same update in either buffer.
        assert_eq!(a[0], b[0]);
        assert_eq!(b[1], 1.0);
    }
}
