//! An imported digit model on the MNIST test set: the same figures `lambda-cnn eval` gives
//! the seed's weights.

use super::Network;
use crate::data::mnist::Split;
use crate::model::ModelError;
use crate::train::EvalMetrics;

/// Accuracy and mean cross-entropy of `network` over `split`. The model must read 28×28 grey
/// images and answer 10 classes in digit order.
pub fn on_mnist(network: &Network, split: &Split) -> Result<EvalMetrics, ModelError> {
    const BATCH: usize = 500;
    let spec = network.spec();
    let side = crate::data::IMAGE_SIDE;
    if (spec.input.height, spec.input.width, spec.input.channels) != (side, side, 1)
        || spec.labels.len() != crate::model::CLASSES
    {
        return Err(ModelError::BadWeights {
            path: None,
            message: format!(
                "MNIST needs a model of 28×28×1 images and 10 classes; this one takes {}×{}×{} and answers {}",
                spec.input.height,
                spec.input.width,
                spec.input.channels,
                spec.labels.len()
            ),
        });
    }
    let (mut correct, mut loss) = (0usize, 0f64);
    let pixels = crate::data::IMAGE_PIXELS;
    for (images, labels) in split
        .images
        .chunks(BATCH * pixels)
        .zip(split.labels.chunks(BATCH))
    {
        let raw: Vec<f32> = images.iter().map(|&p| p as f32).collect();
        for (p, &label) in network.probabilities(&raw)?.iter().zip(labels) {
            correct += (crate::model::argmax(p) == label as usize) as usize;
            loss -= (p[label as usize].max(1e-12) as f64).ln();
        }
    }
    let n = split.len().max(1);
    Ok(EvalMetrics {
        test_accuracy: correct as f64 / n as f64,
        test_loss: loss / n as f64,
        samples: split.len(),
    })
}
