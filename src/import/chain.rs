//! What every importer builds with: a chain of layers and their tensors, grown one operation
//! at a time, that folds what inference does not need to run separately. A batch norm or a
//! constant scale, shift or bias becomes an affine step, folded into the conv or dense layer
//! right before it, or into the input scaling when no layer comes before it. A channels-last
//! flatten before a dense layer becomes a permutation of that layer's weights.

use super::ImportError;
use crate::net::spec::{Layer, Shape};

/// A dense array of f32 in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Its shape.
    pub dims: Vec<usize>,
    /// Its values.
    pub data: Vec<f32>,
}

impl Array {
    /// An array, checked: `data` must have as many values as `dims` says.
    pub fn new(dims: Vec<usize>, data: Vec<f32>) -> Result<Self, ImportError> {
        let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(data.len()) {
            return Err(ImportError::Malformed(format!(
                "a tensor of shape {dims:?} has {} values",
                data.len()
            )));
        }
        Ok(Self { dims, data })
    }

    /// The transpose of a 2-D array.
    pub fn t(&self) -> Self {
        let (r, c) = (self.dims[0], self.dims[1]);
        let mut data = vec![0.0; r * c];
        for i in 0..r {
            for j in 0..c {
                data[j * r + i] = self.data[i * c + j];
            }
        }
        Self {
            dims: vec![c, r],
            data,
        }
    }

    /// Axes reordered: output axis `i` is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Self {
        self.permuted(perm).expect("a permutation of the axes")
    }

    /// [`Array::permute`], refusing a `perm` that is not a permutation of the axes.
    pub fn permuted(&self, perm: &[usize]) -> Result<Self, ImportError> {
        let mut sorted = perm.to_vec();
        sorted.sort_unstable();
        if sorted != (0..self.dims.len()).collect::<Vec<_>>() {
            return Err(ImportError::Malformed(format!(
                "perm {perm:?} for a tensor of shape {:?}",
                self.dims
            )));
        }
        Ok(self.permute_unchecked(perm))
    }

    fn permute_unchecked(&self, perm: &[usize]) -> Self {
        let rank = self.dims.len();
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims[p]).collect();
        let mut strides = vec![1usize; rank];
        for i in (0..rank.saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.dims[i + 1];
        }
        let mut data = Vec::with_capacity(self.data.len());
        let mut idx = vec![0usize; rank];
        for _ in 0..self.data.len() {
            let src: usize = (0..rank).map(|i| idx[i] * strides[perm[i]]).sum();
            data.push(self.data[src]);
            for i in (0..rank).rev() {
                idx[i] += 1;
                if idx[i] < dims[i] {
                    break;
                }
                idx[i] = 0;
            }
        }
        Self { dims, data }
    }
}

/// The layers so far, their tensors, the input scaling, and the shape of the current value.
pub struct Chain {
    pub(super) layers: Vec<Layer>,
    pub(super) tensors: Vec<(String, Array)>,
    /// The input scaling, per input channel: `raw × scale + offset`.
    pub(super) scale: Vec<f32>,
    pub(super) offset: Vec<f32>,
    input: Shape,
    shape: Shape,
}

impl Chain {
    /// An empty chain over an input of `channels` × `height` × `width`, scaled by `scale` and
    /// `offset` per channel.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        scale: Vec<f32>,
        offset: Vec<f32>,
    ) -> Result<Self, ImportError> {
        let input = Shape::Map {
            c: channels,
            h: height,
            w: width,
        };
        if let Err(e) = crate::net::spec::plan_layers(input, &[Layer::Relu]) {
            return Err(ImportError::Unsupported(e.message));
        }
        Ok(Self {
            layers: Vec::new(),
            tensors: Vec::new(),
            scale,
            offset,
            input: Shape::Map {
                c: channels,
                h: height,
                w: width,
            },
            shape: Shape::Map {
                c: channels,
                h: height,
                w: width,
            },
        })
    }

    /// The input's (channels, height, width).
    pub fn input_dims(&self) -> (usize, usize, usize) {
        match self.input {
            Shape::Map { c, h, w } => (c, h, w),
            Shape::Flat(_) => unreachable!("the input is a map"),
        }
    }

    /// The current value's shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    fn name(&self, kind: &str) -> String {
        format!("{kind}{}", self.layers.len())
    }

    fn tensor_mut(&mut self, name: &str) -> Option<&mut Array> {
        self.tensors
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    fn push(&mut self, layer: Layer) -> Result<(), ImportError> {
        self.layers.push(layer);
        self.replan()
    }

    /// Recomputes the current shape from the layers (the plan's own rules), so a layer that
    /// cannot follow the previous one is refused where it is added.
    fn replan(&mut self) -> Result<(), ImportError> {
        let plan = crate::net::spec::plan_layers(self.input, &self.layers)
            .map_err(|e| ImportError::Unsupported(e.message))?;
        self.shape = plan.shapes.last().copied().unwrap_or(self.input);
        Ok(())
    }

    /// A convolution: `weight` [filters, in_channels, kh, kw].
    pub fn conv(
        &mut self,
        weight: Array,
        bias: Option<Vec<f32>>,
        stride: [usize; 2],
        pad: [usize; 4],
    ) -> Result<(), ImportError> {
        let (Shape::Map { c, .. }, &[f, ci, kh, kw]) = (self.shape, weight.dims.as_slice()) else {
            return Err(ImportError::Unsupported(format!(
                "a convolution of weight {:?} on a {} input",
                weight.dims, self.shape
            )));
        };
        if ci != c {
            return Err(ImportError::Malformed(format!(
                "a convolution's weight has {ci} input channels; its input has {c}"
            )));
        }
        let name = self.name("conv");
        self.tensors.push((format!("{name}.weight"), weight));
        if let Some(b) = &bias {
            self.tensors
                .push((format!("{name}.bias"), Array::new(vec![f], b.clone())?));
        }
        self.push(Layer::Conv2d {
            name,
            filters: f,
            kernel: [kh, kw],
            stride,
            pad,
            bias: bias.is_some(),
        })
    }

    /// A dense layer: `weight` [units, inputs].
    pub fn dense(&mut self, mut weight: Array, bias: Option<Vec<f32>>) -> Result<(), ImportError> {
        let [units, n_in] = weight.dims[..] else {
            return Err(ImportError::Malformed(format!(
                "a dense layer's weight has shape {:?}",
                weight.dims
            )));
        };
        if Shape::Flat(n_in) != self.shape {
            return Err(ImportError::Malformed(format!(
                "a dense layer reads {n_in} values; its input is {}",
                self.shape
            )));
        }
        // A channels-last flatten right before: read the weights' columns in (c, y, x) order
        // instead, and flatten as PyTorch does.
        if let Some(Layer::Flatten { channels_last }) = self.layers.last_mut() {
            if *channels_last {
                if let Some(Shape::Map { c, h, w }) = self.map_before_flatten() {
                    weight = Array::new(vec![units, h, w, c], weight.data)?.permute(&[0, 3, 1, 2]);
                    weight.dims = vec![units, n_in];
                    if let Some(Layer::Flatten { channels_last }) = self.layers.last_mut() {
                        *channels_last = false;
                    }
                }
            }
        }
        let name = self.name("dense");
        self.tensors.push((format!("{name}.weight"), weight));
        if let Some(b) = &bias {
            self.tensors
                .push((format!("{name}.bias"), Array::new(vec![units], b.clone())?));
        }
        self.push(Layer::Dense {
            name,
            units,
            bias: bias.is_some(),
        })
    }

    fn map_before_flatten(&self) -> Option<Shape> {
        match self.layers.len() {
            0 | 1 => Some(self.input),
            n => crate::net::spec::plan_layers(self.input, &self.layers[..n - 1])
                .ok()
                .and_then(|p| p.shapes.last().copied()),
        }
    }

    /// `x × scale[c] + shift[c]` per channel of the current value (one value each: the same
    /// for all). Folded into the layer before, or the input scaling.
    pub fn affine(&mut self, scale: Vec<f32>, shift: Vec<f32>) -> Result<(), ImportError> {
        let n = self.shape.channels();
        let widen = |v: Vec<f32>, what: &str| -> Result<Vec<f32>, ImportError> {
            match v.len() {
                1 => Ok(vec![v[0]; n]),
                l if l == n => Ok(v),
                l => Err(ImportError::Unsupported(format!(
                    "a {what} of {l} values on {} (one per channel, or one for all, is supported)",
                    self.shape
                ))),
            }
        };
        let (scale, shift) = (widen(scale, "scale")?, widen(shift, "shift")?);
        match self.layers.last().cloned() {
            None => {
                // raw × s + o, then × a + b.
                for c in 0..n {
                    self.scale[c] *= scale[c];
                    self.offset[c] = self.offset[c] * scale[c] + shift[c];
                }
                Ok(())
            }
            Some(Layer::Conv2d {
                name,
                bias,
                filters,
                kernel,
                stride,
                pad,
            }) => {
                let w = self
                    .tensor_mut(&format!("{name}.weight"))
                    .expect("pushed with the layer");
                let per = w.data.len() / filters;
                for (f, chunk) in w.data.chunks_mut(per).enumerate() {
                    chunk.iter_mut().for_each(|v| *v *= scale[f]);
                }
                self.fold_bias(&name, bias, &scale, &shift)?;
                let layer = self.layers.last_mut().expect("checked");
                *layer = Layer::Conv2d {
                    name,
                    filters,
                    kernel,
                    stride,
                    pad,
                    bias: true,
                };
                Ok(())
            }
            Some(Layer::Dense { name, bias, units }) => {
                let w = self
                    .tensor_mut(&format!("{name}.weight"))
                    .expect("pushed with the layer");
                let per = w.data.len() / units;
                for (u, row) in w.data.chunks_mut(per).enumerate() {
                    row.iter_mut().for_each(|v| *v *= scale[u]);
                }
                self.fold_bias(&name, bias, &scale, &shift)?;
                let layer = self.layers.last_mut().expect("checked");
                *layer = Layer::Dense {
                    name,
                    units,
                    bias: true,
                };
                Ok(())
            }
            Some(Layer::Affine { name }) => {
                let s = self.tensor_mut(&format!("{name}.scale")).expect("pushed");
                s.data.iter_mut().zip(&scale).for_each(|(v, a)| *v *= a);
                let t = self.tensor_mut(&format!("{name}.shift")).expect("pushed");
                t.data
                    .iter_mut()
                    .zip(scale.iter().zip(&shift))
                    .for_each(|(v, (a, b))| *v = *v * a + b);
                Ok(())
            }
            Some(_) => {
                let name = self.name("affine");
                self.tensors
                    .push((format!("{name}.scale"), Array::new(vec![n], scale)?));
                self.tensors
                    .push((format!("{name}.shift"), Array::new(vec![n], shift)?));
                self.push(Layer::Affine { name })
            }
        }
    }

    fn fold_bias(
        &mut self,
        name: &str,
        had: bool,
        scale: &[f32],
        shift: &[f32],
    ) -> Result<(), ImportError> {
        let key = format!("{name}.bias");
        if had {
            let b = self.tensor_mut(&key).expect("pushed with the layer");
            b.data
                .iter_mut()
                .zip(scale.iter().zip(shift))
                .for_each(|(v, (a, s))| *v = *v * a + s);
        } else {
            // Right after its weight, so the file's order follows the plan's.
            let at = self
                .tensors
                .iter()
                .position(|(n, _)| n == &format!("{name}.weight"))
                .expect("pushed");
            self.tensors.insert(
                at + 1,
                (key, Array::new(vec![shift.len()], shift.to_vec())?),
            );
        }
        Ok(())
    }

    /// A batch norm at inference: `(x − mean) / √(var + eps) × gamma + beta`.
    pub fn batch_norm(
        &mut self,
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        var: &[f32],
        eps: f32,
    ) -> Result<(), ImportError> {
        let n = gamma.len();
        if [beta.len(), mean.len(), var.len()].iter().any(|&l| l != n) {
            return Err(ImportError::Malformed(
                "a batch norm's four vectors differ in length".into(),
            ));
        }
        if var.iter().any(|&v| v + eps <= 0.0) || !eps.is_finite() {
            return Err(ImportError::Malformed(
                "a batch norm's variance + epsilon is not positive".into(),
            ));
        }
        let scale: Vec<f32> = (0..n).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
        let shift: Vec<f32> = (0..n).map(|i| beta[i] - mean[i] * scale[i]).collect();
        self.affine(scale, shift)
    }

    /// A binary classifier's one sigmoid output (Keras `Dense(1, "sigmoid")`, PyTorch
    /// `Linear(n, 1)` + `Sigmoid`) as two classes: a dense layer of one unit `z` followed by a
    /// sigmoid becomes two units `[0, z]` and a softmax, which is exactly `[1 − σ(z), σ(z)]`,
    /// so the answer names the likelier class instead of always class 0. Returns whether it
    /// rewrote anything.
    pub fn sigmoid_output_as_two_classes(&mut self) -> Result<bool, ImportError> {
        let n = self.layers.len();
        let name = match &self.layers[..] {
            [.., Layer::Dense { name, units: 1, .. }, Layer::Sigmoid] => name.clone(),
            _ => return Ok(false),
        };
        if let Some(w) = self.tensor_mut(&format!("{name}.weight")) {
            let n_in = w.dims[1];
            let mut data = vec![0.0; n_in];
            data.extend_from_slice(&w.data);
            *w = Array::new(vec![2, n_in], data)?;
        }
        if let Some(b) = self.tensor_mut(&format!("{name}.bias")) {
            *b = Array::new(vec![2], vec![0.0, b.data[0]])?;
        }
        if let Layer::Dense { units, .. } = &mut self.layers[n - 2] {
            *units = 2;
        }
        self.layers[n - 1] = Layer::Softmax;
        self.replan()?;
        Ok(true)
    }

    /// A layer with no tensors (activations, pools, flatten).
    pub fn op(&mut self, layer: Layer) -> Result<(), ImportError> {
        self.push(layer)
    }
}
