//! ONNX graphs (torch.onnx.export, tf2onnx, Keras's ONNX export, any exporter) whose compute
//! forms a chain from the one image input to the one output. The shape arithmetic exporters
//! emit around a flatten (Shape, Gather, Slice, Concat, Cast, Unsqueeze, Squeeze) is folded into
//! constants here, with the batch taken as 1, since the input's size is known.
//!
//! The value flowing through the chain is tracked with the *view* ONNX has of it: which of
//! our axes (batch, channels, rows, columns — or features, once flat) each ONNX axis is. A
//! Transpose only changes the view; a Reshape that moves size-1 axes does too; a Flatten
//! records whether ONNX flattened channels-last.

use super::chain::{Array, Chain};
use super::{input_scaling, ImportError, Options};
use crate::net::spec::{limits, Layer, Shape};
use candle_onnx::onnx;
use prost::Message;
use std::collections::HashMap;

/// The ops imported, for messages.
pub const SUPPORTED_OPS: &str = "Conv, Relu, MaxPool, AveragePool, GlobalAveragePool, BatchNormalization, Flatten, Reshape, Transpose, Gemm, MatMul, Add, Sub, Mul, Div, Softmax, Sigmoid, Tanh, Dropout, Identity, Constant, and (on constants) Shape, Gather, Slice, Concat, Cast, Unsqueeze, Squeeze";

/// Whether the bytes decode as an ONNX model with a graph.
pub fn looks_like_onnx(bytes: &[u8]) -> bool {
    onnx::ModelProto::decode(bytes).is_ok_and(|m| m.graph.is_some())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ax {
    N,
    C,
    H,
    W,
    F,
}

#[derive(Debug, Clone)]
enum Konst {
    F(Vec<usize>, Vec<f32>),
    I(Vec<usize>, Vec<i64>),
}

impl Konst {
    fn dims(&self) -> &[usize] {
        match self {
            Konst::F(d, _) | Konst::I(d, _) => d,
        }
    }
    fn floats(&self) -> Vec<f32> {
        match self {
            Konst::F(_, v) => v.clone(),
            Konst::I(_, v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    fn ints(&self) -> Vec<i64> {
        match self {
            Konst::F(_, v) => v.iter().map(|&x| x as i64).collect(),
            Konst::I(_, v) => v.clone(),
        }
    }
    fn array(&self) -> Result<Array, ImportError> {
        Array::new(self.dims().to_vec(), self.floats())
    }
}

#[derive(Debug, Clone)]
enum Val {
    /// Shared: Identity and Dropout pass a weight on without copying it.
    Const(std::rc::Rc<Konst>),
    /// The chain's current value, seen through this view (one entry per ONNX axis).
    Dyn(Vec<Ax>),
}

fn constant(k: Konst) -> Val {
    Val::Const(std::rc::Rc::new(k))
}

impl Konst {
    fn len(&self) -> usize {
        match self {
            Konst::F(_, v) => v.len(),
            Konst::I(_, v) => v.len(),
        }
    }
}

/// Values that folding may create in all (shape arithmetic is a few dozen).
const MAX_FOLDED_VALUES: usize = 4 * limits::MAX_PARAMS;
/// Values one Concat may make: it only assembles shapes.
const MAX_CONCAT_VALUES: usize = 1 << 16;

fn unsupported(m: String) -> ImportError {
    ImportError::Unsupported(m)
}
fn malformed(m: String) -> ImportError {
    ImportError::Malformed(m)
}

/// A tensor's values, checked against its dims (no reading past what the file holds).
fn tensor(t: &onnx::TensorProto) -> Result<Konst, ImportError> {
    if t.data_location == 1 || !t.external_data.is_empty() {
        return Err(unsupported(format!(
            "tensor {:?} keeps its data in an external file: export with the weights inside the .onnx",
            t.name
        )));
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| malformed(format!("tensor {:?} has dimension {d}", t.name)))
        })
        .collect::<Result<_, _>>()?;
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= 4 * limits::MAX_PARAMS)
        .ok_or_else(|| unsupported(format!("tensor {:?} declares shape {dims:?}", t.name)))?;
    let shown = format!("{dims:?}");
    let raw = |size: usize| -> Result<&[u8], ImportError> {
        if t.raw_data.len() != n * size {
            return Err(malformed(format!(
                "tensor {:?} of shape {shown} has {} bytes of data, not {}",
                t.name,
                t.raw_data.len(),
                n * size
            )));
        }
        Ok(&t.raw_data)
    };
    let typed = |len: usize| -> Result<(), ImportError> {
        if len != n {
            return Err(malformed(format!(
                "tensor {:?} of shape {shown} has {len} values",
                t.name
            )));
        }
        Ok(())
    };
    let use_raw = !t.raw_data.is_empty() || n == 0;
    Ok(match t.data_type {
        1 if use_raw => Konst::F(
            dims,
            raw(4)?
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
        ),
        1 => {
            typed(t.float_data.len())?;
            Konst::F(dims, t.float_data.clone())
        }
        11 if use_raw => Konst::F(
            dims,
            raw(8)?
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
        ),
        11 => {
            typed(t.double_data.len())?;
            Konst::F(dims, t.double_data.iter().map(|&v| v as f32).collect())
        }
        7 if use_raw => Konst::I(
            dims,
            raw(8)?
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        ),
        7 => {
            typed(t.int64_data.len())?;
            Konst::I(dims, t.int64_data.clone())
        }
        6 if use_raw => Konst::I(
            dims,
            raw(4)?
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                .collect(),
        ),
        6 => {
            typed(t.int32_data.len())?;
            Konst::I(dims, t.int32_data.iter().map(|&v| v as i64).collect())
        }
        other => {
            return Err(unsupported(format!(
                "tensor {:?} has ONNX data type {other} (float32, float64, int32 and int64 are imported)",
                t.name
            )))
        }
    })
}

struct Attrs<'a>(&'a [onnx::AttributeProto]);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&onnx::AttributeProto> {
        self.0.iter().find(|a| a.name == name)
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }
    fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
}

/// An ONNX model.
pub fn from_onnx(bytes: &[u8], options: &Options) -> Result<(Chain, String), ImportError> {
    let model = onnx::ModelProto::decode(bytes)
        .map_err(|e| malformed(format!("not an ONNX model: {e}")))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| malformed("the ONNX model has no graph".into()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(1, |o| o.version);
    let source = format!(
        "onnx opset {opset} ({} {})",
        if model.producer_name.is_empty() {
            "unknown exporter"
        } else {
            &model.producer_name
        },
        model.producer_version
    )
    .trim_end()
    .to_owned();

    let mut values: HashMap<String, Val> = HashMap::new();
    for t in &graph.initializer {
        values.insert(t.name.clone(), constant(tensor(t)?));
    }
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !values.contains_key(&i.name))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(unsupported(format!(
            "the graph has {} inputs; one image input is imported",
            inputs.len()
        )));
    };
    let dims = input_dims(input)?;
    let (view, [c, h, w]) = match dims.as_slice() {
        [_, a, b, d] if *a <= limits::MAX_CHANNELS && *d > limits::MAX_CHANNELS => {
            (vec![Ax::N, Ax::C, Ax::H, Ax::W], [*a, *b, *d])
        }
        [_, a, b, d] if *d <= limits::MAX_CHANNELS && *a > limits::MAX_CHANNELS => {
            (vec![Ax::N, Ax::H, Ax::W, Ax::C], [*d, *a, *b])
        }
        _ => {
            return Err(unsupported(format!(
                "input {:?} has shape {dims:?}: an image batch, [batch, channels, height, width] or [batch, height, width, channels] with 1..={} channels and larger sides, is imported",
                input.name,
                limits::MAX_CHANNELS
            )))
        }
    };
    if h > limits::MAX_INPUT_SIDE || w > limits::MAX_INPUT_SIDE {
        return Err(unsupported(format!(
            "an input of {h}×{w}: sides up to {} are served",
            limits::MAX_INPUT_SIDE
        )));
    }
    let (scale, offset) = input_scaling(options, c)?;
    let mut chain = Chain::new(c, h, w, scale, offset)?;
    values.insert(input.name.clone(), Val::Dyn(view));
    let mut current = input.name.clone();
    let mut folded = 0usize;

    for (i, node) in graph.node.iter().enumerate() {
        let at = |e: ImportError| {
            let wrap = |m: String| format!("node {i} ({} {:?}): {m}", node.op_type, node.name);
            match e {
                ImportError::Unsupported(m) => ImportError::Unsupported(wrap(m)),
                ImportError::Malformed(m) => ImportError::Malformed(wrap(m)),
                other => other,
            }
        };
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(at(unsupported(format!(
                "an op of domain {:?}; supported ops: {SUPPORTED_OPS}",
                node.domain
            ))));
        }
        let out = step(node, opset, &mut values, &mut chain, &current).map_err(at)?;
        if let Some((_, Val::Const(k))) = &out {
            // A new constant (not one passed on): counted against the folding budget.
            if std::rc::Rc::strong_count(k) == 1 {
                folded = folded.saturating_add(k.len());
                if folded > MAX_FOLDED_VALUES {
                    return Err(at(unsupported(format!(
                        "folding constants makes over {MAX_FOLDED_VALUES} values"
                    ))));
                }
            }
        }
        if let Some((name, val)) = out {
            if matches!(val, Val::Dyn(_)) {
                current = name.clone();
            }
            values.insert(name, val);
        }
    }
    match graph.output.as_slice() {
        [o] if o.name == current => Ok((chain, source)),
        [o] => Err(unsupported(format!(
            "the graph's output {:?} is not the end of its chain of layers",
            o.name
        ))),
        outs => Err(unsupported(format!(
            "the graph has {} outputs; one (the class scores) is imported",
            outs.len()
        ))),
    }
}

fn input_dims(input: &onnx::ValueInfoProto) -> Result<Vec<usize>, ImportError> {
    use onnx::tensor_shape_proto::dimension::Value as D;
    use onnx::type_proto::Value as T;
    let Some(T::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(unsupported(format!(
            "input {:?} is not a tensor",
            input.name
        )));
    };
    if t.elem_type != 1 {
        return Err(unsupported(format!(
            "input {:?} has ONNX element type {} (float32 is imported)",
            input.name, t.elem_type
        )));
    }
    let dims = t
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or_default();
    Ok(dims
        .iter()
        .enumerate()
        .map(|(i, d)| match d.value {
            Some(D::DimValue(v)) if v > 0 => v as usize,
            // The batch, or an unknown size (refused below unless it is the batch).
            _ if i == 0 => 1,
            _ => 0,
        })
        .collect())
}

/// The ONNX dims of a value seen through `view`.
fn view_dims(view: &[Ax], shape: Shape) -> Vec<usize> {
    view.iter()
        .map(|ax| match (ax, shape) {
            (Ax::N, _) => 1,
            (Ax::C, Shape::Map { c, .. }) => c,
            (Ax::H, Shape::Map { h, .. }) => h,
            (Ax::W, Shape::Map { w, .. }) => w,
            (Ax::F, Shape::Flat(n)) => n,
            _ => 0,
        })
        .collect()
}

type Out = Option<(String, Val)>;

fn step(
    node: &onnx::NodeProto,
    opset: i64,
    values: &mut HashMap<String, Val>,
    chain: &mut Chain,
    current: &str,
) -> Result<Out, ImportError> {
    let attrs = Attrs(&node.attribute);
    let input = |k: usize| -> Result<Option<&Val>, ImportError> {
        match node.input.get(k).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(name) => values.get(name).map(Some).ok_or_else(|| {
                malformed(format!("input {name:?} is not defined before it is used"))
            }),
        }
    };
    let need = |k: usize| -> Result<&Val, ImportError> {
        input(k)?.ok_or_else(|| malformed(format!("input {k} is missing")))
    };
    let konst = |k: usize| -> Result<Konst, ImportError> {
        match need(k)? {
            Val::Const(c) => Ok((**c).clone()),
            Val::Dyn(_) => Err(unsupported(format!(
                "input {k} ({:?}) is computed from the image; it must be a constant",
                node.input[k]
            ))),
        }
    };
    // The chain's value, and only the latest one: a graph that branches is refused.
    let dynamic = |k: usize| -> Result<Vec<Ax>, ImportError> {
        match need(k)? {
            Val::Dyn(v) if node.input[k] == current => Ok(v.clone()),
            Val::Dyn(_) => Err(unsupported(
                "the graph branches (a value is used after a later layer): only chains of layers are imported".into(),
            )),
            Val::Const(_) => Err(unsupported(format!("input {k} is a constant where the image's value was expected"))),
        }
    };
    let out = |v: Val| -> Result<Out, ImportError> {
        let name = node
            .output
            .first()
            .ok_or_else(|| malformed("the node has no output".into()))?;
        Ok(Some((name.clone(), v)))
    };
    let op = node.op_type.as_str();
    match op {
        "Identity" | "Dropout" => {
            if node.output.len() > 1 && !node.output[1].is_empty() && op == "Dropout" {
                // The mask output: all ones at inference.
            }
            out(need(0)?.clone())
        }
        "Constant" => {
            let v = if let Some(t) = attrs.get("value").and_then(|a| a.t.as_ref()) {
                tensor(t)?
            } else if let Some(a) = attrs.get("value_float") {
                Konst::F(vec![], vec![a.f])
            } else if let Some(a) = attrs.get("value_floats") {
                Konst::F(vec![a.floats.len()], a.floats.clone())
            } else if let Some(a) = attrs.get("value_int") {
                Konst::I(vec![], vec![a.i])
            } else if let Some(a) = attrs.get("value_ints") {
                Konst::I(vec![a.ints.len()], a.ints.clone())
            } else {
                return Err(unsupported(
                    "a Constant of a kind other than a tensor, float(s) or int(s)".into(),
                ));
            };
            out(constant(v))
        }
        "Shape" => match need(0)? {
            Val::Dyn(v) => {
                let d: Vec<i64> = view_dims(v, chain.shape())
                    .iter()
                    .map(|&x| x as i64)
                    .collect();
                out(constant(Konst::I(vec![d.len()], d)))
            }
            Val::Const(k) => {
                let d: Vec<i64> = k.dims().iter().map(|&x| x as i64).collect();
                out(constant(Konst::I(vec![d.len()], d)))
            }
        },
        "Gather" => {
            let data = konst(0)?;
            let idx = konst(1)?;
            if data.dims().len() != 1 || attrs.int("axis", 0) != 0 {
                return Err(unsupported("Gather on anything but a 1-D constant".into()));
            }
            let len = data.dims()[0] as i64;
            let pick = |i: i64| -> Result<usize, ImportError> {
                let j = if i < 0 { i + len } else { i };
                (0..len)
                    .contains(&j)
                    .then_some(j as usize)
                    .ok_or_else(|| malformed(format!("Gather index {i} out of {len}")))
            };
            let picks: Vec<usize> = idx.ints().into_iter().map(pick).collect::<Result<_, _>>()?;
            let dims = idx.dims().to_vec();
            out(constant(match data {
                Konst::F(_, v) => Konst::F(dims, picks.iter().map(|&i| v[i]).collect()),
                Konst::I(_, v) => Konst::I(dims, picks.iter().map(|&i| v[i]).collect()),
            }))
        }
        "Slice" => {
            let data = konst(0)?;
            if data.dims().len() != 1 {
                return Err(unsupported("Slice on anything but a 1-D constant".into()));
            }
            let (starts, ends, steps) = if opset >= 10 {
                let steps = match input(4)? {
                    Some(Val::Const(k)) => k.ints(),
                    _ => vec![1],
                };
                (konst(1)?.ints(), konst(2)?.ints(), steps)
            } else {
                (
                    attrs.ints("starts").unwrap_or_default(),
                    attrs.ints("ends").unwrap_or_default(),
                    vec![1],
                )
            };
            let len = data.dims()[0] as i64;
            let (&[s], &[e], &[st]) = (starts.as_slice(), ends.as_slice(), steps.as_slice()) else {
                return Err(unsupported("Slice over more than one axis".into()));
            };
            if st != 1 {
                return Err(unsupported(format!("Slice with step {st}")));
            }
            let clamp = |v: i64| (if v < 0 { v + len } else { v }).clamp(0, len) as usize;
            let (s, e) = (clamp(s), clamp(e).max(clamp(s)));
            out(constant(match data {
                Konst::F(_, v) => Konst::F(vec![e - s], v[s..e].to_vec()),
                Konst::I(_, v) => Konst::I(vec![e - s], v[s..e].to_vec()),
            }))
        }
        "Concat" => {
            let mut all = Vec::new();
            for k in 0..node.input.len() {
                let c = konst(k)?;
                if all.len() + c.len() > MAX_CONCAT_VALUES {
                    return Err(unsupported(format!(
                        "a Concat of over {MAX_CONCAT_VALUES} constant values (Concat is folded only for shapes)"
                    )));
                }
                if c.dims().len() > 1 {
                    return Err(unsupported(
                        "Concat of constants of more than one axis".into(),
                    ));
                }
                all.extend(c.ints());
            }
            out(constant(Konst::I(vec![all.len()], all)))
        }
        "Cast" => {
            let c = konst(0)?;
            let dims = c.dims().to_vec();
            out(constant(match attrs.int("to", 1) {
                1 | 10 | 11 => Konst::F(dims, c.floats()),
                6 | 7 => Konst::I(dims, c.ints()),
                t => return Err(unsupported(format!("Cast to ONNX type {t}"))),
            }))
        }
        "Unsqueeze" | "Squeeze" => {
            let axes = if opset >= 13 {
                match input(1)? {
                    Some(Val::Const(k)) => Some(k.ints()),
                    _ => None,
                }
            } else {
                attrs.ints("axes")
            };
            match need(0)? {
                Val::Const(k) => {
                    let mut dims = k.dims().to_vec();
                    if op == "Unsqueeze" {
                        let mut axes =
                            axes.ok_or_else(|| malformed("Unsqueeze without axes".into()))?;
                        let rank = (dims.len() + axes.len()) as i64;
                        axes.iter_mut().for_each(|a| {
                            if *a < 0 {
                                *a += rank
                            }
                        });
                        axes.sort();
                        for a in axes {
                            dims.insert((a.max(0) as usize).min(dims.len()), 1);
                        }
                    } else {
                        dims.retain(|&d| d != 1);
                    }
                    out(constant(match k.as_ref() {
                        Konst::F(_, v) => Konst::F(dims, v.clone()),
                        Konst::I(_, v) => Konst::I(dims, v.clone()),
                    }))
                }
                Val::Dyn(_) if op == "Squeeze" => {
                    let view = dynamic(0)?;
                    let dims = view_dims(&view, chain.shape());
                    let rank = dims.len() as i64;
                    let axes: Vec<usize> = match axes {
                        Some(a) => a
                            .iter()
                            .map(|&x| (if x < 0 { x + rank } else { x }) as usize)
                            .collect(),
                        None => (1..dims.len()).filter(|&i| dims[i] == 1).collect(),
                    };
                    if axes.contains(&0) || axes.iter().any(|&a| dims.get(a) != Some(&1)) {
                        return Err(unsupported(format!(
                            "Squeeze of axes {axes:?} of a value of shape {dims:?}"
                        )));
                    }
                    let kept: Vec<Ax> = view
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !axes.contains(i))
                        .map(|(_, a)| *a)
                        .collect();
                    reshape_to(
                        chain,
                        &view,
                        kept.len(),
                        &dims
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| !axes.contains(i))
                            .map(|(_, d)| *d)
                            .collect::<Vec<_>>(),
                    )
                    .and_then(|v| out(Val::Dyn(v)))
                }
                Val::Dyn(_) => Err(unsupported("Unsqueeze of the image's value".into())),
            }
        }
        "Transpose" => match need(0)? {
            Val::Const(k) => {
                let a = k.array()?;
                let perm: Vec<usize> = attrs
                    .ints("perm")
                    .map(|p| p.iter().map(|&x| x as usize).collect())
                    .unwrap_or_else(|| (0..a.dims.len()).rev().collect());
                let t = a.permuted(&perm)?;
                out(constant(Konst::F(t.dims, t.data)))
            }
            Val::Dyn(_) => {
                let view = dynamic(0)?;
                let perm = attrs
                    .ints("perm")
                    .ok_or_else(|| unsupported("Transpose without perm".into()))?;
                let mut sorted: Vec<i64> = perm.clone();
                sorted.sort();
                if sorted != (0..view.len() as i64).collect::<Vec<_>>() {
                    return Err(malformed(format!(
                        "perm {perm:?} for a rank-{} value",
                        view.len()
                    )));
                }
                if perm.first() != Some(&0) {
                    return Err(unsupported(format!(
                        "Transpose {perm:?} moves the batch axis"
                    )));
                }
                out(Val::Dyn(perm.iter().map(|&p| view[p as usize]).collect()))
            }
        },
        "Reshape" => {
            let target = konst(1)?.ints();
            match need(0)? {
                Val::Const(k) => {
                    let dims = resolve(&target, k.dims(), k.len())?;
                    out(constant(match k.as_ref().clone() {
                        Konst::F(_, v) => Konst::F(dims, v),
                        Konst::I(_, v) => Konst::I(dims, v),
                    }))
                }
                Val::Dyn(_) => {
                    let view = dynamic(0)?;
                    let dims = view_dims(&view, chain.shape());
                    let mut t = target.clone();
                    // The batch: whatever the exporter wrote, it stays the batch.
                    if let Some(first) = t.first_mut() {
                        if *first == -1 || *first == 0 || *first == 1 {
                            *first = 1;
                        }
                    }
                    let new = resolve(&t, &dims, dims.iter().product())?;
                    if new.first() != Some(&1) {
                        return Err(unsupported(format!(
                            "Reshape to {target:?}, which moves the batch"
                        )));
                    }
                    let v = reshape_to(chain, &view, new.len(), &new)?;
                    out(Val::Dyn(v))
                }
            }
        }
        "Flatten" => {
            let view = dynamic(0)?;
            let axis = attrs.int("axis", 1);
            if axis != 1 {
                return Err(unsupported(format!(
                    "Flatten from axis {axis} (axis 1 is imported)"
                )));
            }
            let dims = view_dims(&view, chain.shape());
            let v = reshape_to(chain, &view, 2, &[1, dims[1..].iter().product()])?;
            out(Val::Dyn(v))
        }
        "Conv" => {
            let view = dynamic(0)?;
            if view != [Ax::N, Ax::C, Ax::H, Ax::W] {
                return Err(unsupported(format!(
                    "a convolution over data laid out as {view:?} (NCHW is what ONNX convolves)"
                )));
            }
            let w = konst(1)?.array()?;
            let b = match input(2)? {
                Some(Val::Const(k)) => Some(k.floats()),
                Some(Val::Dyn(_)) => {
                    return Err(unsupported("a bias computed from the image".into()))
                }
                None => None,
            };
            if w.dims.len() != 4 {
                return Err(unsupported(format!(
                    "a convolution with a weight of shape {:?} (2-D convolutions are imported)",
                    w.dims
                )));
            }
            if attrs.int("group", 1) != 1
                || attrs
                    .ints("dilations")
                    .is_some_and(|d| d.iter().any(|&x| x != 1))
            {
                return Err(unsupported("grouped or dilated convolutions".into()));
            }
            let k = [w.dims[2], w.dims[3]];
            let (s, pad) = window(&attrs, k, chain.shape())?;
            chain.conv(w, b, s, pad)?;
            out(Val::Dyn(view))
        }
        "MaxPool" | "AveragePool" => {
            let view = dynamic(0)?;
            if view != [Ax::N, Ax::C, Ax::H, Ax::W] {
                return Err(unsupported(format!(
                    "pooling over data laid out as {view:?}"
                )));
            }
            if node.output.get(1).is_some_and(|o| !o.is_empty()) {
                return Err(unsupported("MaxPool's indices output".into()));
            }
            if attrs.int("ceil_mode", 0) != 0
                || attrs
                    .ints("dilations")
                    .is_some_and(|d| d.iter().any(|&x| x != 1))
            {
                return Err(unsupported("pooling with ceil_mode or dilations".into()));
            }
            let k = attrs
                .ints("kernel_shape")
                .ok_or_else(|| malformed("no kernel_shape".into()))?;
            let [kh, kw] = k[..] else {
                return Err(unsupported(format!("a pooling kernel of {k:?}")));
            };
            let k = [kh.max(0) as usize, kw.max(0) as usize];
            let (s, pad) = window(&attrs, k, chain.shape())?;
            if op == "MaxPool" {
                chain.op(Layer::MaxPool2d {
                    kernel: k,
                    stride: s,
                    pad,
                })?;
            } else if pad == [0; 4] {
                chain.op(Layer::AvgPool2d {
                    kernel: k,
                    stride: s,
                })?;
            } else {
                return Err(unsupported("average pooling with padding".into()));
            }
            out(Val::Dyn(view))
        }
        "GlobalAveragePool" => {
            let view = dynamic(0)?;
            if view != [Ax::N, Ax::C, Ax::H, Ax::W] {
                return Err(unsupported(format!(
                    "pooling over data laid out as {view:?}"
                )));
            }
            chain.op(Layer::GlobalAvgPool2d)?;
            out(Val::Dyn(view))
        }
        "Relu" | "Sigmoid" | "Tanh" => {
            let view = dynamic(0)?;
            chain.op(match op {
                "Relu" => Layer::Relu,
                "Sigmoid" => Layer::Sigmoid,
                _ => Layer::Tanh,
            })?;
            out(Val::Dyn(view))
        }
        "Softmax" => {
            let view = dynamic(0)?;
            let axis = attrs.int("axis", if opset >= 13 { -1 } else { 1 });
            if view != [Ax::N, Ax::F] || !(axis == 1 || axis == -1) {
                return Err(unsupported(format!("a softmax over axis {axis} of a value laid out as {view:?} (over the features of a flat value is imported)")));
            }
            chain.op(Layer::Softmax)?;
            out(Val::Dyn(view))
        }
        "Gemm" | "MatMul" => {
            let view = dynamic(0)?;
            if view != [Ax::N, Ax::F] {
                return Err(unsupported(format!(
                    "a matrix product of a value laid out as {view:?} (flatten it first)"
                )));
            }
            let b = konst(1)?.array()?;
            if b.dims.len() != 2 {
                return Err(unsupported(format!(
                    "a matrix product with a weight of shape {:?}",
                    b.dims
                )));
            }
            let (weight, bias) = if op == "Gemm" {
                if attrs.int("transA", 0) != 0 {
                    return Err(unsupported("Gemm with transA".into()));
                }
                let mut w = if attrs.int("transB", 0) != 0 {
                    b
                } else {
                    b.t()
                };
                let alpha = attrs.float("alpha", 1.0);
                w.data.iter_mut().for_each(|v| *v *= alpha);
                let beta = attrs.float("beta", 1.0);
                let c = match input(2)? {
                    Some(Val::Const(k)) => {
                        let units = w.dims[0];
                        let v = k.floats();
                        let v = match v.len() {
                            1 => vec![v[0]; units],
                            n if n == units => v,
                            n => {
                                return Err(unsupported(format!(
                                    "a Gemm bias of {n} values for {units} outputs"
                                )))
                            }
                        };
                        Some(v.into_iter().map(|x| x * beta).collect())
                    }
                    Some(Val::Dyn(_)) => {
                        return Err(unsupported("a bias computed from the image".into()))
                    }
                    None => None,
                };
                (w, c)
            } else {
                (b.t(), None)
            };
            chain.dense(weight, bias)?;
            out(Val::Dyn(view))
        }
        "BatchNormalization" => {
            let view = dynamic(0)?;
            if view.get(1) != Some(&Ax::C) && view.get(1) != Some(&Ax::F) {
                return Err(unsupported(format!(
                    "a batch norm over data laid out as {view:?}"
                )));
            }
            if attrs.int("training_mode", 0) != 0 {
                return Err(unsupported("a batch norm in training mode".into()));
            }
            let [g, b, m, v] = [1, 2, 3, 4].map(|k| konst(k).map(|c| c.floats()));
            chain.batch_norm(&g?, &b?, &m?, &v?, attrs.float("epsilon", 1e-5))?;
            out(Val::Dyn(view))
        }
        "Add" | "Sub" | "Mul" | "Div" => {
            let (a, b) = (need(0)?.clone(), need(1)?.clone());
            match (a, b) {
                (Val::Const(x), Val::Const(y)) => out(constant(fold(op, &x, &y)?)),
                (Val::Dyn(_), Val::Const(k)) => {
                    let view = dynamic(0)?;
                    let v = per_channel(&view, chain.shape(), &k)?;
                    let ones = vec![1.0; v.len()];
                    let zeros = vec![0.0; v.len()];
                    match op {
                        "Add" => chain.affine(ones, v)?,
                        "Sub" => chain.affine(ones, v.iter().map(|x| -x).collect())?,
                        "Mul" => chain.affine(v, zeros)?,
                        _ => {
                            if v.contains(&0.0) {
                                return Err(malformed("a division by zero".into()));
                            }
                            chain.affine(v.iter().map(|x| 1.0 / x).collect(), zeros)?
                        }
                    }
                    out(Val::Dyn(view))
                }
                (Val::Const(k), Val::Dyn(_)) if op != "Div" => {
                    let view = dynamic(1)?;
                    let v = per_channel(&view, chain.shape(), &k)?;
                    let n = v.len();
                    match op {
                        "Add" => chain.affine(vec![1.0; n], v)?,
                        "Sub" => chain.affine(vec![-1.0; n], v)?,
                        _ => chain.affine(v, vec![0.0; n])?,
                    }
                    out(Val::Dyn(view))
                }
                _ => Err(unsupported(format!(
                    "{op} of two values computed from the image (a residual or branching graph)"
                ))),
            }
        }
        other => Err(unsupported(format!(
            "op {other}; supported ops: {SUPPORTED_OPS}"
        ))),
    }
}

/// Stride and padding [top, left, bottom, right] from a Conv's or pool's attributes.
fn window(
    attrs: &Attrs,
    k: [usize; 2],
    shape: Shape,
) -> Result<([usize; 2], [usize; 4]), ImportError> {
    let s = attrs.ints("strides").unwrap_or(vec![1, 1]);
    let [sh, sw] = s[..] else {
        return Err(unsupported(format!("strides {s:?}")));
    };
    if sh < 1 || sw < 1 {
        return Err(malformed(format!("strides {s:?}")));
    }
    let s = [sh as usize, sw as usize];
    let auto = attrs.string("auto_pad").unwrap_or_default();
    let pad = match auto.as_str() {
        "" | "NOTSET" => {
            let p = attrs.ints("pads").unwrap_or(vec![0; 4]);
            let [t, l, b, r] = p[..] else {
                return Err(unsupported(format!("pads {p:?}")));
            };
            if [t, l, b, r].iter().any(|&x| x < 0) {
                return Err(malformed(format!("pads {p:?}")));
            }
            [t as usize, l as usize, b as usize, r as usize]
        }
        "VALID" => [0; 4],
        "SAME_UPPER" | "SAME_LOWER" => {
            let Shape::Map { h, w, .. } = shape else {
                return Err(malformed("padding a vector".into()));
            };
            let side = |n: usize, k: usize, s: usize| {
                let total = ((n.div_ceil(s) - 1) * s + k).saturating_sub(n);
                if auto == "SAME_UPPER" {
                    [total / 2, total - total / 2]
                } else {
                    [total - total / 2, total / 2]
                }
            };
            let ([t, b], [l, r]) = (side(h, k[0], s[0]), side(w, k[1], s[1]));
            [t, l, b, r]
        }
        other => return Err(unsupported(format!("auto_pad {other}"))),
    };
    Ok((s, pad))
}

/// Resolves a Reshape target: 0 copies the input's dim, −1 takes what is left.
fn resolve(target: &[i64], dims: &[usize], total: usize) -> Result<Vec<usize>, ImportError> {
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            0 => out.push(
                *dims
                    .get(i)
                    .ok_or_else(|| malformed(format!("Reshape copies axis {i} of {dims:?}")))?,
            ),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            t if t > 0 => out.push(t as usize),
            t => return Err(malformed(format!("Reshape to {t} in {target:?}"))),
        }
    }
    let known = out
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(0);
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(malformed(format!("Reshape of {dims:?} to {target:?}")));
        }
        out[i] = total / known;
    }
    if out.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(total) {
        return Err(malformed(format!(
            "Reshape of {dims:?} ({total} values) to {target:?}"
        )));
    }
    Ok(out)
}

/// The view after reshaping the chain's value (seen as `view`) to `new` dims (batch first).
/// Flattening adds a flatten to the chain; moving size-1 axes only relabels.
fn reshape_to(
    chain: &mut Chain,
    view: &[Ax],
    rank: usize,
    new: &[usize],
) -> Result<Vec<Ax>, ImportError> {
    let dims = view_dims(view, chain.shape());
    // Our non-batch axes in ONNX order, leaving out the size-1 ones (their place is free).
    let significant: Vec<(Ax, usize)> = view
        .iter()
        .zip(&dims)
        .skip(1)
        .filter(|(_, &d)| d != 1)
        .map(|(a, d)| (*a, *d))
        .collect();
    match (chain.shape(), rank) {
        (Shape::Flat(_), 2) => Ok(vec![Ax::N, Ax::F]),
        (Shape::Map { .. }, 2) => {
            let order: Vec<Ax> = significant.iter().map(|(a, _)| *a).collect();
            let in_order = |want: &[Ax]| {
                let filtered: Vec<Ax> =
                    want.iter().copied().filter(|a| order.contains(a)).collect();
                filtered == order
            };
            let channels_last = if in_order(&[Ax::C, Ax::H, Ax::W]) {
                false
            } else if in_order(&[Ax::H, Ax::W, Ax::C]) {
                true
            } else {
                return Err(unsupported(format!("flattening data laid out as {view:?}")));
            };
            chain.op(Layer::Flatten { channels_last })?;
            Ok(vec![Ax::N, Ax::F])
        }
        (Shape::Map { .. }, 4) => {
            let new_sig: Vec<usize> = new[1..].iter().copied().filter(|&d| d != 1).collect();
            if new_sig != significant.iter().map(|(_, d)| *d).collect::<Vec<_>>() {
                return Err(unsupported(format!(
                    "a Reshape of {dims:?} to {new:?} that moves values between axes"
                )));
            }
            let mut sig = significant.iter().map(|(a, _)| *a);
            let mut free = [Ax::C, Ax::H, Ax::W]
                .into_iter()
                .filter(|a| !significant.iter().any(|(b, _)| b == a));
            let mut out = vec![Ax::N];
            for &d in &new[1..] {
                let ax = if d != 1 { sig.next() } else { free.next() };
                out.push(ax.ok_or_else(|| malformed(format!("Reshape of {dims:?} to {new:?}")))?);
            }
            Ok(out)
        }
        (s, r) => Err(unsupported(format!("a Reshape of a {s} value to rank {r}"))),
    }
}

/// A constant's values along the channel (or feature) axis of `view`: one value, or one per
/// channel with every other axis of size 1.
fn per_channel(view: &[Ax], shape: Shape, k: &Konst) -> Result<Vec<f32>, ImportError> {
    let v = k.floats();
    if v.len() == 1 {
        return Ok(v);
    }
    let kd = k.dims();
    // Broadcasting aligns the trailing axes.
    let offset = view.len().checked_sub(kd.len()).ok_or_else(|| {
        unsupported(format!(
            "a constant of shape {kd:?} on a rank-{} value",
            view.len()
        ))
    })?;
    let channel = match shape {
        Shape::Map { .. } => Ax::C,
        Shape::Flat(_) => Ax::F,
    };
    let mut found = None;
    for (i, &d) in kd.iter().enumerate() {
        if d != 1 {
            if view[offset + i] != channel || found.is_some() || d != shape.channels() {
                return Err(unsupported(format!(
                    "a constant of shape {kd:?} that varies along something other than the channels"
                )));
            }
            found = Some(i);
        }
    }
    Ok(v)
}

/// Arithmetic on two constants (shape arithmetic, or an exporter's folded scaling).
fn fold(op: &str, x: &Konst, y: &Konst) -> Result<Konst, ImportError> {
    let (a, b) = (x.ints(), y.ints());
    let same = x.dims() == y.dims();
    if !(same || a.len() == 1 || b.len() == 1) {
        return Err(unsupported(format!(
            "{op} of constants of shapes {:?} and {:?}",
            x.dims(),
            y.dims()
        )));
    }
    let dims = if a.len() >= b.len() {
        x.dims().to_vec()
    } else {
        y.dims().to_vec()
    };
    let n = a.len().max(b.len());
    let at = |v: &[f32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
    match (x, y) {
        (Konst::I(..), Konst::I(..)) => {
            let ati = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
            let r: Result<Vec<i64>, ImportError> = (0..n)
                .map(|i| {
                    let (p, q) = (ati(&a, i), ati(&b, i));
                    match op {
                        "Add" => p.checked_add(q),
                        "Sub" => p.checked_sub(q),
                        "Mul" => p.checked_mul(q),
                        _ => p.checked_div(q),
                    }
                    .ok_or_else(|| malformed(format!("{op} of {p} and {q}")))
                })
                .collect();
            Ok(Konst::I(dims, r?))
        }
        _ => {
            let (a, b) = (x.floats(), y.floats());
            let r = (0..n)
                .map(|i| {
                    let (p, q) = (at(&a, i), at(&b, i));
                    match op {
                        "Add" => p + q,
                        "Sub" => p - q,
                        "Mul" => p * q,
                        _ => p / q,
                    }
                })
                .collect();
            Ok(Konst::F(dims, r))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_targets_resolve_as_onnx_says() {
        assert_eq!(resolve(&[1, -1], &[1, 8, 4, 4], 128).unwrap(), vec![1, 128]);
        assert_eq!(resolve(&[0, -1], &[1, 8, 4, 4], 128).unwrap(), vec![1, 128]);
        assert!(resolve(&[-1, -1], &[1, 8], 8).is_err());
        assert!(resolve(&[3, -1], &[1, 8], 8).is_err());
        assert!(resolve(&[i64::MAX, 2], &[1, 8], 8).is_err());
    }

    #[test]
    fn bytes_that_are_not_onnx_are_refused_without_a_panic() {
        for bytes in [&b""[..], b"\x08\x07\x12\x04abcd", &[0xff; 64]] {
            let _ = from_onnx(bytes, &Options::default());
        }
    }
}
