//! The fast internal layout against candle's stock ops on PyTorch-layout weights: the same
//! logits and the same gradients, within float tolerance.

use super::*;
use candle_core::{Module, Tensor, D};
use candle_nn::Linear;
use std::collections::HashMap;

/// Tests say `?` where a failure is a test failure with its message (as candle's do).
type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn random_images(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n * IMAGE_PIXELS).map(|_| rng.random::<u8>()).collect()
}

/// How the reference pools.
#[derive(Clone, Copy)]
enum Pool {
    /// candle's `max_pool2d`. Its backward divides the gradient by the window size (4 here;
    /// seen with candle 0.11 against finite differences), so it is only a forward reference.
    Stock,
    /// A max over the two size-2 axes of an NCHW view: correct gradients.
    Reshape,
}

/// The seed's model written with candle's stock NCHW ops, on PyTorch-layout tensors.
fn reference_logits(
    t: &HashMap<&str, Tensor>,
    images: &[u8],
    n: usize,
    pool: Pool,
) -> TestResult<Tensor> {
    let x = Tensor::from_vec(
        images.iter().map(|&p| p as f32 / 255.0).collect::<Vec<_>>(),
        (n, 1, 28, 28),
        &Device::Cpu,
    )?;
    let x = x
        .conv2d(&t["conv.weight"], 0, 1, 1, 1)?
        .broadcast_add(&t["conv.bias"].reshape((1, CHANNELS, 1, 1))?)?
        .relu()?;
    let x = match pool {
        Pool::Stock => x.max_pool2d(2)?,
        Pool::Reshape => x
            .reshape((n, CHANNELS, POOL_SIDE, 2, POOL_SIDE, 2))?
            .max_keepdim(5)?
            .max_keepdim(3)?,
    };
    let x = x.flatten_from(1)?;
    let fc1 = Linear::new(t["fc1.weight"].clone(), Some(t["fc1.bias"].clone()));
    let fc2 = Linear::new(t["fc2.weight"].clone(), Some(t["fc2.bias"].clone()));
    Ok(fc2.forward(&fc1.forward(&x)?.relu()?)?)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> TestResult<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn max_abs(a: &Tensor) -> TestResult<f32> {
    Ok(a.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

#[test]
fn forward_matches_stock_candle_ops() -> TestResult {
    let model = Cnn::init(7)?;
    // Non-zero biases, so their layout is exercised too.
    model
        .conv_b
        .set(&Tensor::arange(0f32, 32., &Device::Cpu)?.affine(0.01, -0.1)?)?;
    model
        .fc1_b
        .set(&Tensor::arange(0f32, 128., &Device::Cpu)?.affine(0.001, -0.05)?)?;
    let n = 5;
    let images = random_images(n, 1);
    let ours = model.forward_bytes(images.chunks(IMAGE_PIXELS))?;
    let pt: HashMap<_, _> = model.to_pytorch()?.into_iter().collect();
    let reference = reference_logits(&pt, &images, n, Pool::Stock)?;
    assert_eq!(ours.dims(), &[n, CLASSES]);
    let diff = max_abs_diff(&ours, &reference)?;
    assert!(
        diff < 1e-4 * max_abs(&reference)?.max(1.0),
        "max |diff| = {diff}"
    );
    Ok(())
}

#[test]
fn gradients_match_stock_candle_ops() -> TestResult {
    let model = Cnn::init(11)?;
    let n = 4;
    let images = random_images(n, 2);
    let labels = Tensor::new(&[3u32, 1, 4, 1], &Device::Cpu)?;

    let ours = model.forward_bytes(images.chunks(IMAGE_PIXELS))?;
    let grads = candle_nn::loss::cross_entropy(&ours, &labels)?.backward()?;
    let g = |v: &Var| -> TestResult<Var> {
        Ok(Var::from_tensor(
            grads
                .get(v.as_tensor())
                .ok_or("a variable has no gradient")?,
        )?)
    };
    // A model whose "weights" are our gradients converts them to PyTorch's layout.
    let our_grads = Cnn {
        conv_w: g(&model.conv_w)?,
        conv_b: g(&model.conv_b)?,
        fc1_w: g(&model.fc1_w)?,
        fc1_b: g(&model.fc1_b)?,
        fc2_w: g(&model.fc2_w)?,
        fc2_b: g(&model.fc2_b)?,
        infer: Default::default(),
    }
    .to_pytorch()?;

    let (_, ref_grads) = reference_gradients(&model, &images, &[3, 1, 4, 1])?;
    for ((name, ours), theirs) in our_grads.iter().zip(&ref_grads) {
        assert_eq!(ours.dims(), theirs.dims(), "{name}");
        let diff = max_abs_diff(ours, theirs)?;
        assert!(
            diff <= 1e-4 * max_abs(theirs)?.max(1e-3),
            "{name}: max |diff| = {diff}"
        );
    }
    Ok(())
}

/// The mean cross-entropy and the gradients (PyTorch's layouts, in the order of
/// `weights::TENSORS`) of the model written with candle's stock ops.
fn reference_gradients(
    model: &Cnn,
    images: &[u8],
    labels: &[u8],
) -> TestResult<(f32, Vec<Tensor>)> {
    let n = labels.len();
    let targets = Tensor::from_iter(labels.iter().map(|&l| l as u32), &Device::Cpu)?;
    let vars: Vec<(&str, Var)> = model
        .to_pytorch()?
        .into_iter()
        .map(|(name, t)| Ok((name, Var::from_tensor(&t)?)))
        .collect::<TestResult<_>>()?;
    let pt: HashMap<_, _> = vars
        .iter()
        .map(|(n, v)| (*n, v.as_tensor().clone()))
        .collect();
    let reference = reference_logits(&pt, images, n, Pool::Reshape)?;
    let loss = candle_nn::loss::cross_entropy(&reference, &targets)?;
    let grads = loss.backward()?;
    let grads = vars
        .iter()
        .map(|(_, var)| {
            grads
                .get(var.as_tensor())
                .cloned()
                .ok_or("a variable has no gradient")
        })
        .collect::<Result<_, _>>()?;
    Ok((loss.to_scalar::<f32>()?, grads))
}

// The hand-written training step (`backprop.rs`) against candle's stock ops, a test per
// instruction set; one set of buffers serves a batch of 37 (more than one block
// of 32 in the transposed gradient), then one of 4.
crate::simd::isa_test!(training_step_matches_stock_candle_ops, |isa| {
    super::training_step_matches_stock_candle_ops_on(isa).unwrap()
});

fn training_step_matches_stock_candle_ops_on(isa: crate::simd::Isa) -> TestResult {
    use super::backprop::Backprop;
    let cases: Vec<_> = [(37usize, 12u64), (4, 13)]
        .into_iter()
        .map(|(n, seed)| -> TestResult<_> {
            let mut params = Cnn::init(seed)?.params()?;
            // Non-zero biases, so that their gradients' layout is exercised too.
            for (i, b) in params.conv_b.iter_mut().enumerate() {
                *b = 0.01 * i as f32 - 0.1;
            }
            for (i, b) in params.fc1_b.iter_mut().enumerate() {
                *b = 0.001 * i as f32 - 0.05;
            }
            let model = Cnn::from_params(&params)?;
            let images = random_images(n, seed);
            let labels: Vec<u8> = (0..n).map(|i| ((i * 7 + 3) % CLASSES) as u8).collect();
            let reference = reference_gradients(&model, &images, &labels)?;
            Ok((params, images, labels, reference))
        })
        .collect::<TestResult<_>>()?;
    let mut backprop = Backprop::new(isa);
    for (params, images, labels, (ref_loss, ref_grads)) in &cases {
        // Every value must be overwritten.
        let mut grads = Params::zeros();
        grads
            .buffers_mut()
            .iter_mut()
            .for_each(|b| b.fill(f32::NAN));
        backprop.set_batch(images.chunks(IMAGE_PIXELS), labels)?;
        let loss = backprop.loss_and_gradients(params, &mut grads)?;
        let n = labels.len();
        assert!(
            (loss - ref_loss).abs() <= 1e-5 * ref_loss.abs().max(1.0),
            "{isa}, batch {n}: loss {loss} vs {ref_loss}"
        );
        let ours = Cnn::from_params(&grads)?.to_pytorch()?;
        for ((name, ours), theirs) in ours.iter().zip(ref_grads) {
            assert_eq!(ours.dims(), theirs.dims(), "{name}");
            let diff = max_abs_diff(ours, theirs)?;
            // The conv kernel's gradient sums ~25k products per entry, in another order
            // than candle's: 1.4e-4 relative seen. A wrong layout is off by order 1.
            assert!(
                diff <= 5e-4 * max_abs(theirs)?.max(1e-3),
                "{isa}, batch {n}, {name}: max |diff| = {diff}, max |reference| = {}",
                max_abs(theirs)?
            );
        }
    }
    Ok(())
}

#[test]
fn training_step_refuses_bad_batches() -> TestResult {
    use super::backprop::Backprop;
    let params = Cnn::init(1)?.params()?;
    let mut grads = Params::zeros();
    let images = random_images(2, 1);
    let mut backprop = Backprop::default();
    let mut set =
        |images: &[u8], labels: &[u8]| backprop.set_batch(images.chunks(IMAGE_PIXELS), labels);
    assert!(matches!(
        set(&images, &[1]),
        Err(ModelError::BadBatch {
            images: 2,
            labels: 1
        })
    ));
    assert!(matches!(set(&[], &[]), Err(ModelError::BadBatch { .. })));
    assert!(matches!(
        set(&images, &[1, 10]),
        Err(ModelError::BadLabel(10))
    ));
    assert!(matches!(
        set(&images[..IMAGE_PIXELS + 5], &[1, 2]),
        Err(ModelError::BadInput { .. })
    ));
    // A refused batch leaves none to compute on.
    assert!(matches!(
        backprop.loss_and_gradients(&params, &mut grads),
        Err(ModelError::NoBatch)
    ));
    backprop.set_batch(images.chunks(IMAGE_PIXELS), &[1, 2])?;
    assert!(backprop.loss_and_gradients(&params, &mut grads).is_ok());
    let mut short = Params::zeros();
    short.fc2_b.pop();
    assert!(matches!(
        backprop.loss_and_gradients(&params, &mut short),
        Err(ModelError::BadParams { name: "fc2_b", .. })
    ));
    Ok(())
}

#[test]
fn save_load_round_trip_gives_identical_predictions() -> TestResult {
    let model = Cnn::init(3)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("w.safetensors");
    let sha = model.save(&path)?;
    let (loaded, sha2) = Cnn::load(&path)?;
    assert_eq!(sha, sha2);
    let pixels: Vec<f32> = random_images(3, 5)
        .iter()
        .map(|&p| p as f32 / 255.0)
        .collect();
    assert_eq!(
        model.probabilities(&pixels)?,
        loaded.probabilities(&pixels)?
    );
    // Deterministic bytes: saving the loaded model again gives the same file.
    assert_eq!(loaded.to_safetensors()?, std::fs::read(&path)?);
    Ok(())
}

#[test]
fn file_has_pytorch_names_and_shapes() -> TestResult {
    let bytes = Cnn::init(1)?.to_safetensors()?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        [
            "conv.bias",
            "conv.weight",
            "fc1.bias",
            "fc1.weight",
            "fc2.bias",
            "fc2.weight"
        ]
    );
    for (name, shape) in weights::TENSORS {
        assert_eq!(st.tensor(name)?.shape(), shape, "{name}");
        assert_eq!(st.tensor(name)?.dtype(), safetensors::Dtype::F32);
    }
    Ok(())
}

#[test]
fn bad_weight_files_are_errors() -> TestResult {
    assert!(matches!(
        Cnn::from_safetensors(b"not a safetensors file"),
        Err(ModelError::BadWeights { .. })
    ));
    let mut tensors: HashMap<String, Tensor> = Cnn::init(1)?
        .to_pytorch()?
        .into_iter()
        .map(|(n, t)| (n.to_owned(), t))
        .collect();
    tensors.insert(
        "fc2.bias".into(),
        Tensor::zeros(9, DType::F32, &Device::Cpu)?,
    );
    let err = Cnn::from_pytorch(&tensors)
        .err()
        .ok_or("expected an error")?;
    assert!(err.to_string().contains("fc2.bias"), "{err}");
    tensors.remove("conv.weight");
    let err = Cnn::from_pytorch(&tensors)
        .err()
        .ok_or("expected an error")?;
    assert!(
        err.to_string().contains("missing tensor conv.weight"),
        "{err}"
    );
    Ok(())
}

#[test]
fn probabilities_reject_partial_images() -> TestResult {
    let model = Cnn::init(1)?;
    assert!(matches!(
        model.probabilities(&[0.0; 783]),
        Err(ModelError::BadInput { .. })
    ));
    assert!(matches!(
        model.probabilities(&[]),
        Err(ModelError::BadInput { .. })
    ));
    let p = model.probabilities(&[0.5; 784])?;
    assert!((p[0].iter().sum::<f32>() - 1.0).abs() < 1e-5);
    Ok(())
}

#[test]
fn argmax_takes_the_first_of_ties() -> TestResult {
    assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), 1);
    Ok(())
}

#[test]
fn gradients_match_finite_differences() -> TestResult {
    let model = Cnn::init(5)?;
    let images = random_images(3, 9);
    let labels = Tensor::new(&[7u32, 0, 2], &Device::Cpu)?;
    let loss = |m: &Cnn| -> TestResult<Tensor> {
        let logits = m.forward_bytes(images.chunks(IMAGE_PIXELS))?;
        Ok(candle_nn::loss::cross_entropy(&logits, &labels)?)
    };
    let grads = loss(&model)?.backward()?;
    for (p, var) in model.vars().into_iter().enumerate() {
        let g = grads
            .get(var.as_tensor())
            .ok_or("a variable has no gradient")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let w = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        // The entries with the largest gradients: a central difference resolves them well.
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &i in &idx[..3] {
            let at = |delta: f32| -> TestResult<f64> {
                let mut w2 = w.clone();
                w2[i] += delta;
                var.set(&Tensor::from_vec(w2, var.shape(), &Device::Cpu)?)?;
                let l = loss(&model)?.to_scalar::<f32>()? as f64;
                var.set(&Tensor::from_vec(w.clone(), var.shape(), &Device::Cpu)?)?;
                Ok(l)
            };
            let eps = 1e-3;
            let fd = (at(eps)? - at(-eps)?) / (2.0 * eps as f64);
            let err = (fd - g[i] as f64).abs();
            assert!(
                err <= 0.05 * g[i].abs() as f64 + 1e-3,
                "param {p} entry {i}: autograd {} vs finite difference {fd}",
                g[i]
            );
        }
    }
    Ok(())
}

#[test]
fn inference_path_matches_the_graph() -> TestResult {
    let mut model = Cnn::init(21)?;
    model
        .fc1_b
        .set(&Tensor::arange(0f32, 128., &Device::Cpu)?.affine(0.002, -0.1)?)?;
    let images = random_images(6, 4);
    let pixels: Vec<f32> = images.iter().map(|&p| p as f32 / 255.0).collect();
    // Six images take the graph; each alone takes the single-image path.
    let graph = model.probabilities(&pixels)?;
    for (i, img) in pixels.chunks(IMAGE_PIXELS).enumerate() {
        let single = model.probabilities(img)?;
        for (a, b) in single[0].iter().zip(&graph[i]) {
            assert!(
                (a - b).abs() < 1e-5,
                "image {i}: {:?} vs {:?}",
                single[0],
                graph[i]
            );
        }
    }
    // Changing the weights (as a training step does) refreshes the single-image copy.
    let before = model.probabilities(&pixels[..IMAGE_PIXELS])?;
    for var in model.vars_mut() {
        *var = Var::from_tensor(&var.as_tensor().affine(0.5, 0.0)?)?;
    }
    let after = model.probabilities(&pixels[..IMAGE_PIXELS])?;
    let graph_after = graph_probabilities(&model, &pixels[..IMAGE_PIXELS])?;
    assert_ne!(before, after);
    for (a, b) in after[0].iter().zip(&graph_after[0]) {
        assert!((a - b).abs() < 1e-5);
    }
    Ok(())
}

fn graph_probabilities(model: &Cnn, pixels: &[f32]) -> TestResult<Vec<Vec<f32>>> {
    let n = pixels.len() / IMAGE_PIXELS;
    let images = Tensor::from_slice(pixels, (n, IMAGE_PIXELS), &Device::Cpu)?;
    Ok(candle_nn::ops::softmax(&model.forward(&images)?, D::Minus1)?.to_vec2::<f32>()?)
}

#[test]
fn a_weights_file_over_the_cap_is_refused_unread() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("huge.safetensors");
    let f = std::fs::File::create(&path)?;
    f.set_len(weights::MAX_WEIGHTS_BYTES + 1)?;
    let err = Cnn::load(&path)
        .err()
        .ok_or("expected an error")?
        .to_string();
    let cap = format!("over {} bytes", weights::MAX_WEIGHTS_BYTES);
    assert!(err.contains(&cap), "{err}");
    Ok(())
}

#[test]
fn weights_holding_nan_are_refused_naming_the_tensor() -> TestResult {
    let mut tensors = Cnn::init(3)?.to_pytorch()?;
    let mut v = tensors[5].1.to_vec1::<f32>()?;
    v[2] = f32::INFINITY;
    tensors[5].1 = candle_core::Tensor::new(v, &candle_core::Device::Cpu)?;
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (*n, t)), None)?;
    let err = Cnn::from_safetensors(&bytes)
        .err()
        .ok_or("expected an error")?
        .to_string();
    assert!(
        err.contains("tensor fc2.bias holds inf at index 2"),
        "{err}"
    );
    Ok(())
}
