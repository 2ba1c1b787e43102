//! Models trained elsewhere — three architectures, built in Keras and in PyTorch, saved in
//! every format `lambda-cnn import` reads (tests/fixtures/models, made by its make.py) — answer
//! what their framework answered, and broken or lying files are refused with a reason.

use candle_onnx::onnx;
use lambda_cnn::import::{import, ImportError, InputScale, Options};
use lambda_cnn::net::{file, Network};
use prost::Message;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

#[derive(serde::Deserialize)]
struct Expect {
    import_flags: Vec<String>,
    inputs: Vec<Vec<u8>>,
    probabilities: Vec<Vec<f32>>,
    classes: Vec<usize>,
    #[serde(default)]
    keras_test_accuracy: Option<f64>,
}

fn expect(stem: &str) -> Expect {
    let text = std::fs::read_to_string(fixtures().join(format!("{stem}.expect.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The options the fixture's flags give, as `lambda-cnn import` parses them.
fn options(flags: &[String], layers: Option<PathBuf>) -> Options {
    let mut o = Options {
        layers,
        ..Options::default()
    };
    let list = |s: &str| {
        s.split(',')
            .map(|v| v.parse::<f32>().unwrap())
            .collect::<Vec<_>>()
    };
    let mut it = flags.iter();
    let (mut mean, mut std) = (None, None);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap();
        match flag.as_str() {
            "--input-scale" => {
                assert_eq!(value, "none");
                o.scale = InputScale::None;
            }
            "--mean" => mean = Some(list(value)),
            "--std" => std = Some(list(value)),
            "--labels" => o.labels = Some(value.split(',').map(str::to_owned).collect()),
            other => panic!("unknown flag {other}"),
        }
    }
    if let (Some(mean), Some(std)) = (mean, std) {
        o.scale = InputScale::Normalize { mean, std };
    }
    o
}

/// Imports a fixture file, writes it as a model file and loads it back as a function would.
fn import_and_load(file_name: &str) -> Result<Network, ImportError> {
    let stem = file_name.split('.').next().unwrap();
    let layers = stem
        .ends_with("-torch")
        .then(|| fixtures().join(format!("{stem}.layers.json")));
    let imported = import(
        &fixtures().join(file_name),
        &options(&expect(stem).import_flags, layers),
    )?;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.safetensors");
    file::save(&out, &imported.spec, &imported.tensors)?;
    Ok(file::load(&out)?.0)
}

const FORMATS: [(&str, &[&str]); 2] = [
    ("keras", &["keras", "h5", "onnx"]),
    ("torch", &["onnx", "pt", "safetensors"]),
];

#[test]
fn every_format_of_every_architecture_answers_what_its_framework_did() {
    let mut checked = Vec::new();
    for arch in ["seed", "twoconv", "rgb"] {
        for (framework, extensions) in FORMATS {
            let stem = format!("{arch}-{framework}");
            let want = expect(&stem);
            for ext in extensions {
                let name = format!("{stem}.{ext}");
                let net = import_and_load(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
                let raw: Vec<f32> = want.inputs.iter().flatten().map(|&v| v as f32).collect();
                let got = net.probabilities(&raw).unwrap();
                assert_eq!(got.len(), want.inputs.len());
                let mut worst = 0f32;
                for (i, (g, w)) in got.iter().zip(&want.probabilities).enumerate() {
                    assert_eq!(g.len(), w.len(), "{name}: classes");
                    for (a, b) in g.iter().zip(w) {
                        worst = worst.max((a - b).abs());
                    }
                    assert_eq!(
                        lambda_cnn::model::argmax(g),
                        want.classes[i],
                        "{name}: input {i}: {g:?} vs {w:?}"
                    );
                }
                assert!(worst <= 1e-4, "{name}: max |Δp| = {worst}");
                if arch == "rgb" {
                    assert_eq!(net.spec().labels[0], "circle", "{name}");
                }
                checked.push(name);
            }
        }
    }
    assert_eq!(checked.len(), 18, "{checked:?}");
}

#[test]
fn the_seed_architecture_runs_on_the_seed_kernels_from_every_format() {
    for (framework, extensions) in FORMATS {
        for ext in extensions {
            let name = format!("seed-{framework}.{ext}");
            let net = import_and_load(&name).unwrap();
            assert!(net.is_seed_layout(), "{name} runs on the generic path");
        }
    }
    let net = import_and_load("twoconv-torch.onnx").unwrap();
    assert!(!net.is_seed_layout());
}

#[test]
fn the_seed_keras_model_scores_on_mnist_what_keras_evaluate_did() {
    let want = expect("seed-keras").keras_test_accuracy.unwrap();
    let dir = std::env::var("MNIST_DIR").unwrap_or_else(|_| "../shared/mnist".into());
    let test = lambda_cnn::data::load_split(Path::new(&dir), lambda_cnn::data::SplitKind::Test)
        .expect("the MNIST test set (MNIST_DIR)");
    for ext in ["keras", "h5", "onnx"] {
        let net = import_and_load(&format!("seed-keras.{ext}")).unwrap();
        let got = lambda_cnn::net::eval::on_mnist(&net, &test).unwrap();
        assert_eq!(got.samples, 10_000);
        assert!(
            (got.test_accuracy - want).abs() < 5e-4,
            "seed-keras.{ext}: {} here, {want} in Keras",
            got.test_accuracy
        );
    }
}

fn import_bytes(bytes: &[u8], ext: &str, options: &Options) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("model.{ext}"));
    std::fs::write(&path, bytes).unwrap();
    import(&path, options)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn onnx_model(name: &str) -> onnx::ModelProto {
    onnx::ModelProto::decode(std::fs::read(fixtures().join(name)).unwrap().as_slice()).unwrap()
}

#[test]
fn truncated_files_of_every_format_are_refused_without_a_panic() {
    for name in [
        "twoconv-keras.keras",
        "twoconv-keras.h5",
        "twoconv-torch.onnx",
        "twoconv-torch.pt",
        "twoconv-torch.safetensors",
    ] {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        let ext = name.rsplit('.').next().unwrap();
        let layers = Some(fixtures().join("twoconv-torch.layers.json"));
        // HDF5 may end in unused space, so only its middle is cut; the others need their end.
        let ends = if ext == "h5" {
            vec![]
        } else {
            vec![bytes.len() - 7]
        };
        for keep in [bytes.len() / 2, 100, 9].into_iter().chain(ends) {
            let e = import_bytes(&bytes[..keep], ext, &options(&[], layers.clone()))
                .expect_err(&format!("{name} cut to {keep} bytes was imported"));
            assert!(!e.is_empty());
        }
    }
}

#[test]
fn an_unsupported_op_is_named_with_where_it_is_and_what_is_supported() {
    let mut m = onnx_model("twoconv-torch.onnx");
    let node = m
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "Relu")
        .unwrap();
    node.op_type = "LeakyRelu".into();
    let e = import_bytes(&m.encode_to_vec(), "onnx", &Options::default()).unwrap_err();
    assert!(
        e.contains("op LeakyRelu") && e.contains("node 1") && e.contains("supported ops: Conv"),
        "{e}"
    );

    let mut config: serde_json::Value = {
        let zip = std::fs::File::open(fixtures().join("twoconv-keras.keras")).unwrap();
        let mut zip = zip::ZipArchive::new(zip).unwrap();
        serde_json::from_reader(zip.by_name("config.json").unwrap()).unwrap()
    };
    config["config"]["layers"][4]["class_name"] = "LeakyReLU".into();
    let e = import_bytes(
        &rezip("twoconv-keras.keras", "config.json", &config.to_string()),
        "keras",
        &Options::default(),
    )
    .unwrap_err();
    assert!(
        e.contains("layer 4 (LeakyReLU") && e.contains("supported: Conv2d"),
        "{e}"
    );
}

/// A copy of a fixture zip with one entry replaced.
fn rezip(name: &str, entry: &str, content: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut src =
        zip::ZipArchive::new(std::fs::File::open(fixtures().join(name)).unwrap()).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..src.len() {
        let mut f = src.by_index(i).unwrap();
        let fname = f.name().unwrap().into_owned();
        out.start_file(
            fname.as_str(),
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        if fname == entry {
            out.write_all(content.as_bytes()).unwrap();
        } else {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).unwrap();
            out.write_all(&buf).unwrap();
        }
    }
    out.finish().unwrap().into_inner()
}

#[test]
fn lying_tensors_are_refused_before_anything_is_allocated_for_them() {
    // A weight whose declared shape is not its data.
    let mut m = onnx_model("twoconv-torch.onnx");
    let g = m.graph.as_mut().unwrap();
    let w = g
        .initializer
        .iter_mut()
        .find(|t| t.dims.len() == 4)
        .unwrap();
    w.dims[0] *= 2;
    let e = import_bytes(&m.encode_to_vec(), "onnx", &Options::default()).unwrap_err();
    assert!(e.contains("bytes of data"), "{e}");

    // A huge declared size.
    let mut m = onnx_model("twoconv-torch.onnx");
    let g = m.graph.as_mut().unwrap();
    let w = g
        .initializer
        .iter_mut()
        .find(|t| t.dims.len() == 4)
        .unwrap();
    w.dims = vec![1 << 40, 1 << 40, 3, 3];
    let e = import_bytes(&m.encode_to_vec(), "onnx", &Options::default()).unwrap_err();
    assert!(e.contains("declares shape"), "{e}");

    // NaN weights.
    let mut m = onnx_model("twoconv-torch.onnx");
    let g = m.graph.as_mut().unwrap();
    let w = g
        .initializer
        .iter_mut()
        .find(|t| t.dims.len() == 2)
        .unwrap();
    w.raw_data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = import_bytes(&m.encode_to_vec(), "onnx", &Options::default()).unwrap_err();
    assert!(e.contains("NaN"), "{e}");

    // A layer that does not fit what comes before it.
    let mut m = onnx_model("twoconv-torch.onnx");
    let g = m.graph.as_mut().unwrap();
    let gemm = g.node.iter().position(|n| n.op_type == "Gemm").unwrap();
    let weight = g.node[gemm].input[1].clone();
    let w = g.initializer.iter_mut().find(|t| t.name == weight).unwrap();
    let cols = w.dims[1] as usize;
    w.dims[1] -= 1;
    w.raw_data.truncate(w.dims[0] as usize * (cols - 1) * 4);
    let e = import_bytes(&m.encode_to_vec(), "onnx", &Options::default()).unwrap_err();
    assert!(e.contains("dense layer reads 783 values"), "{e}");
}

#[test]
fn a_state_dict_without_its_layers_says_what_to_do() {
    let e = import(&fixtures().join("seed-torch.pt"), &Options::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--layers"), "{e}");

    // Layers that leave tensors unused, or name one the state dict lacks.
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("layers.json");
    std::fs::write(
        &short,
        r#"{"input": {"height": 28, "width": 28, "channels": 1},
            "layers": [{"conv2d": {"from": "0"}}, "relu", {"max_pool2d": {"kernel": 2}}, "flatten", {"linear": {"from": "4"}}]}"#,
    )
    .unwrap();
    let e = import(
        &fixtures().join("seed-torch.pt"),
        &options(&[], Some(short.clone())),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("does not use") && e.contains("6.weight"), "{e}");
    std::fs::write(
        &short,
        r#"{"input": {"height": 28, "width": 28, "channels": 1}, "layers": [{"conv2d": {"from": "features.0"}}]}"#,
    )
    .unwrap();
    let e = import(
        &fixtures().join("seed-torch.pt"),
        &options(&[], Some(short)),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("no tensor features.0.weight") && e.contains("0.weight, 4.bias"),
        "{e}"
    );
}

#[test]
fn labels_that_do_not_match_the_outputs_are_refused() {
    let o = Options {
        labels: Some(vec!["cat".into(), "dog".into()]),
        ..Options::default()
    };
    let e = import(&fixtures().join("seed-torch.onnx"), &o)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("--labels names 2 classes; the model has 10 outputs"),
        "{e}"
    );
}

// Regressions from a review: each of these once panicked or would have imported a wrong model.

#[test]
fn an_onnx_input_of_unknown_or_zero_size_is_refused() {
    use onnx::tensor_shape_proto::dimension::Value as D;
    use onnx::type_proto::Value as T;
    let mut m = onnx_model("twoconv-torch.onnx");
    let g = m.graph.as_mut().unwrap();
    let Some(T::TensorType(t)) = g.input[0].r#type.as_mut().unwrap().value.as_mut() else {
        panic!("a tensor input")
    };
    t.shape.as_mut().unwrap().dim[1].value = Some(D::DimParam("channels".into()));
    let e = import_bytes(&m.encode_to_vec(), "onnx", &Options::default()).unwrap_err();
    assert!(e.contains("input"), "{e}");
}

#[test]
fn onnx_transposes_that_are_not_permutations_or_move_the_batch_are_refused() {
    let base = onnx_model("twoconv-torch.onnx");
    let transpose = |input: &str, perm: Vec<i64>| onnx::NodeProto {
        input: vec![input.into()],
        output: vec!["t".into()],
        op_type: "Transpose".into(),
        attribute: vec![onnx::AttributeProto {
            name: "perm".into(),
            ints: perm,
            r#type: 7,
            ..Default::default()
        }],
        ..Default::default()
    };
    // On a weight, with a repeated axis.
    let mut m = base.clone();
    let g = m.graph.as_mut().unwrap();
    let w = g
        .initializer
        .iter()
        .find(|t| t.dims.len() == 2)
        .unwrap()
        .name
        .clone();
    g.node.insert(0, transpose(&w, vec![0, 0]));
    let e = import_bytes(&m.encode_to_vec(), "onnx", &Options::default()).unwrap_err();
    assert!(e.contains("perm [0, 0]"), "{e}");

    // On the image, moving the batch.
    let mut m = base;
    let g = m.graph.as_mut().unwrap();
    let input = g.input[0].name.clone();
    g.node.insert(0, transpose(&input, vec![2, 0, 1, 3]));
    let e = import_bytes(&m.encode_to_vec(), "onnx", &Options::default()).unwrap_err();
    assert!(e.contains("moves the batch"), "{e}");
}

#[test]
fn a_keras_window_of_stride_zero_or_a_kernel_unlike_its_weights_is_refused() {
    let config = |edit: &dyn Fn(&mut serde_json::Value)| {
        let zip = std::fs::File::open(fixtures().join("twoconv-keras.keras")).unwrap();
        let mut zip = zip::ZipArchive::new(zip).unwrap();
        let mut c: serde_json::Value =
            serde_json::from_reader(zip.by_name("config.json").unwrap()).unwrap();
        edit(&mut c);
        rezip("twoconv-keras.keras", "config.json", &c.to_string())
    };
    // layers[2] is the first Conv2D (same padding).
    let zero =
        config(&|c| c["config"]["layers"][2]["config"]["strides"] = serde_json::json!([0, 0]));
    let e = import_bytes(&zero, "keras", &Options::default()).unwrap_err();
    assert!(e.contains("strides [0, 0]"), "{e}");
    let lying =
        config(&|c| c["config"]["layers"][2]["config"]["kernel_size"] = serde_json::json!([5, 5]));
    let e = import_bytes(&lying, "keras", &Options::default()).unwrap_err();
    assert!(
        e.contains("kernel_size [5, 5] but a kernel of shape [3, 3, 1, 8]"),
        "{e}"
    );
}

/// A state dict of one linear layer over a 2×2 grey input, with the given layers after the
/// input, imported with no input scaling (the model sees the raw values).
fn import_linear(weight: &[f32], bias: f32, layers: &str) -> Result<Network, ImportError> {
    use candle_core::{Device, Tensor};
    let dir = tempfile::tempdir().unwrap();
    let dict = dir.path().join("binary.safetensors");
    let tensors = std::collections::HashMap::from([
        (
            "fc.weight".to_owned(),
            Tensor::from_slice(weight, (weight.len() / 4, 4), &Device::Cpu).unwrap(),
        ),
        (
            "fc.bias".to_owned(),
            Tensor::from_slice(
                &vec![bias; weight.len() / 4],
                weight.len() / 4,
                &Device::Cpu,
            )
            .unwrap(),
        ),
    ]);
    candle_core::safetensors::save(&tensors, &dict).unwrap();
    let description = dir.path().join("layers.json");
    std::fs::write(
        &description,
        format!(r#"{{"input": {{"height": 2, "width": 2, "channels": 1}}, "layers": {layers}}}"#),
    )
    .unwrap();
    let flags = ["--input-scale".to_owned(), "none".to_owned()];
    let imported = import(&dict, &options(&flags, Some(description)))?;
    Ok(Network::new(imported.spec, &imported.tensors)?)
}

#[test]
fn a_binary_classifier_with_one_sigmoid_output_answers_both_classes() {
    let (w, b) = ([0.02f32, -0.01, 0.005, 0.03], -1.5f32);
    let network = import_linear(
        &w,
        b,
        r#"["flatten", {"linear": {"from": "fc"}}, "sigmoid"]"#,
    )
    .expect("a one-unit sigmoid output imports");
    assert_eq!(network.spec().labels, ["0", "1"]);
    for pixels in [
        [0.0f32, 0.0, 0.0, 0.0],
        [10.0, 20.0, 30.0, 40.0],
        [255.0, 0.0, 255.0, 255.0],
    ] {
        let z: f64 = w
            .iter()
            .zip(&pixels)
            .map(|(w, x)| f64::from(w * x))
            .sum::<f64>()
            + f64::from(b);
        let sigmoid = 1.0 / (1.0 + (-z).exp());
        let p = network.probabilities(&pixels).unwrap().pop().unwrap();
        assert_eq!(p.len(), 2);
        assert!(
            (f64::from(p[1]) - sigmoid).abs() < 1e-6,
            "{p:?} vs σ = {sigmoid}"
        );
        assert!(
            (f64::from(p[0]) - (1.0 - sigmoid)).abs() < 1e-6,
            "{p:?} vs σ = {sigmoid}"
        );
    }
    // Both answers happen: the third input is past the boundary.
    let class = |x: [f32; 4]| lambda_cnn::model::argmax(&network.probabilities(&x).unwrap()[0]);
    assert_eq!((class([0.0; 4]), class([255.0, 0.0, 255.0, 255.0])), (0, 1));

    // One output with no sigmoid (a logit) cannot be read as a class: refused, with what to do.
    let e = import_linear(&w, b, r#"["flatten", {"linear": {"from": "fc"}}]"#)
        .err()
        .expect("one logit is refused")
        .to_string();
    assert!(e.contains("one output") && e.contains("sigmoid"), "{e}");
}
