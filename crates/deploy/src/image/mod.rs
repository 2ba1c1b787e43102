//! A function's OCI image, assembled from its compiled binary, without a base image or a
//! container engine (like `ko` for Go). Three layers, most stable first:
//!
//! 1. system: the dynamic loader and the shared libraries the binary needs (asked of the loader),
//!    a CA bundle for HTTPS, and the empty mount points Lambda (and runc) need;
//! 2. data: the model weights (predict) or the MNIST files (train);
//! 3. function: the binary at `/var/runtime/bootstrap`.
//!
//! One architecture per manifest (Lambda rejects image indexes), OCI media types, a non-root
//! user. Everything is reproducible: the same inputs give the same manifest digest.

#![warn(missing_docs)]

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{
    ConfigBuilder, Descriptor, Digest as OciDigest, HistoryBuilder, ImageConfigurationBuilder,
    ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
};
use sha2::{Digest, Sha256};

use super::binary::{self, Arch, BinaryError};
use super::layer::{Layer, LayerCache, LayerError, LayerSpec};
use super::libs::{self, LibsError};

/// Where the binary goes: the path Lambda's own base images use for custom runtimes.
pub const BOOTSTRAP: &str = "/var/runtime/bootstrap";
/// The function's working directory, as on Lambda (`LAMBDA_TASK_ROOT`).
pub const TASK_ROOT: &str = "/var/task";
/// The shipped weights' path in the predict image.
pub const WEIGHTS_IN_IMAGE: &str = concat!("/var/task/", crate::shipped_weights_path!());
/// The weights' model card in the predict image.
pub const CARD_IN_IMAGE: &str = "/var/task/model-weights/mnist-cnn.json";
/// The folder of the four MNIST files in the train image.
pub const MNIST_IN_IMAGE: &str = "/var/task/mnist";
/// Where Debian, Ubuntu and Amazon Linux 2023 keep their bundle: also the first place
/// rustls-native-certs (the AWS SDK's HTTPS client) looks. `SSL_CERT_FILE` names it too.
pub const CA_BUNDLE_IN_IMAGE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The uid:gid Lambda runs functions as (`sbx_user1051`); Lambda overrides `User` anyway,
/// but the image must not need root wherever it runs.
pub const USER: &str = "993:990";

/// The host's CA bundle, looked for where the common distributions keep it.
pub const HOST_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The two functions of this project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Serves predictions (and the digit page).
    Predict,
    /// Trains the model on MNIST.
    Train,
}

/// As its name (`predict`, `train`), as everywhere else it is written.
impl serde::Serialize for Function {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl Function {
    /// `predict` or `train`.
    pub fn name(self) -> &'static str {
        match self {
            Function::Predict => "predict",
            Function::Train => "train",
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Function {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "predict" => Ok(Function::Predict),
            "train" => Ok(Function::Train),
            other => Err(format!("unknown function {other:?}: predict or train")),
        }
    }
}

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their messages
pub enum ImageError {
    #[error(transparent)]
    Binary(#[from] BinaryError),
    #[error(transparent)]
    Libs(#[from] LibsError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(
        "--arch {asked} was asked for, but {binary} is a {actual} binary; give a binary built \
         for {asked} with --binary"
    )]
    ArchMismatch {
        asked: Arch,
        actual: Arch,
        binary: PathBuf,
    },
    #[error("{binary} is the {other} function's binary, not {function}'s: give --binary the {function} binary (target/release/{function}), or --function {other}")]
    WrongFunction {
        function: Function,
        other: Function,
        binary: PathBuf,
    },
    #[error("the {function} image needs {what}: {hint}")]
    MissingInput {
        function: Function,
        what: &'static str,
        hint: &'static str,
    },
    #[error("the MNIST files for the train image failed their check: {0}")]
    Data(#[from] crate::data::DataError),
    #[error("no CA bundle found at {tried}; give one with --ca-bundle")]
    NoCaBundle { tried: String },
    #[error("cannot build the image's {what}: {message}")]
    Spec { what: &'static str, message: String },
    #[error("{dir} is not empty and not an OCI image layout: refusing to write into it")]
    NotALayout { dir: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What an image is made of.
#[derive(Debug, Clone)]
pub struct ImageInputs {
    /// Which function.
    pub function: Function,
    /// Its compiled binary (becomes /var/runtime/bootstrap).
    pub binary: PathBuf,
    /// The architecture asked for; must match the binary's. `None`: the binary's.
    pub arch: Option<Arch>,
    /// The weights file (predict). Its card (`*.json` beside it) goes in too when present.
    pub weights: Option<PathBuf>,
    /// The folder holding the four MNIST files (train).
    pub mnist_dir: Option<PathBuf>,
    /// PEM certificates the functions trust for HTTPS. `None`: the host's bundle.
    pub ca_bundle: Option<PathBuf>,
    /// Every timestamp in the image (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: u64,
}

/// An assembled image: blobs in the layer cache, config and manifest in memory.
#[derive(Debug, Clone)]
pub struct Image {
    /// Which function.
    pub function: Function,
    /// Its architecture (the binary's).
    pub arch: Arch,
    /// Its layers, most stable first.
    pub layers: Vec<Layer>,
    /// The image config's exact bytes.
    pub config: Vec<u8>,
    /// `sha256:…` of the config.
    pub config_digest: String,
    /// The manifest's exact bytes.
    pub manifest: Vec<u8>,
    /// `sha256:…` of the manifest: the image's identity.
    pub manifest_digest: String,
}

impl Image {
    /// Compressed bytes of every blob: what a registry stores and Lambda pulls.
    pub fn compressed_size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum::<u64>()
            + self.config.len() as u64
            + self.manifest.len() as u64
    }

    /// `(digest, where its bytes are)` for every blob but the manifest, config first.
    pub fn blobs(&self) -> Vec<(String, BlobSource<'_>)> {
        let mut blobs = vec![(self.config_digest.clone(), BlobSource::Bytes(&self.config))];
        for l in &self.layers {
            blobs.push((l.digest.clone(), BlobSource::File(&l.blob)));
        }
        blobs
    }
}

/// The bytes of one blob: in memory (config, manifest) or a file in the layer cache.
#[derive(Debug, Clone, Copy)]
pub enum BlobSource<'a> {
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// A file.
    File(&'a Path),
}

/// The host's CA bundle, if any of the usual places has one.
pub fn host_ca_bundle() -> Option<PathBuf> {
    HOST_CA_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn spec_err(what: &'static str) -> impl Fn(oci_spec::OciSpecError) -> ImageError {
    move |e| ImageError::Spec {
        what,
        message: e.to_string(),
    }
}

/// The three layers' contents, without building them.
fn layer_specs(
    inputs: &ImageInputs,
    libs: &[libs::SharedLib],
) -> Result<[LayerSpec; 3], ImageError> {
    let f = inputs.function;
    let ca = match &inputs.ca_bundle {
        Some(p) => p.clone(),
        None => host_ca_bundle().ok_or_else(|| ImageError::NoCaBundle {
            tried: HOST_CA_BUNDLES.join(", "),
        })?,
    };
    let mut system = LayerSpec::new("system: loader, shared libraries, CA bundle");
    for lib in libs {
        system.file(&lib.image_path, &lib.host_path, 0o755)?;
    }
    system.file(CA_BUNDLE_IN_IMAGE, &ca, 0o644)?;
    // Mount points: a read-only root cannot grow them at run time.
    system
        .dir("/tmp", 0o1777)?
        .dir("/proc", 0o555)?
        .dir("/dev", 0o755)?
        .dir(TASK_ROOT, 0o755)?;

    let mut data = LayerSpec::new(match f {
        Function::Predict => "data: model weights",
        Function::Train => "data: MNIST",
    });
    match f {
        Function::Predict => {
            let weights = inputs.weights.as_ref().ok_or(ImageError::MissingInput {
                function: f,
                what: "model weights",
                hint: concat!(
                    "give --weights FILE (e.g. ",
                    crate::shipped_weights_path!(),
                    ")"
                ),
            })?;
            data.file(WEIGHTS_IN_IMAGE, weights, 0o644)?;
            let card = weights.with_extension("json");
            if card.is_file() {
                data.file(CARD_IN_IMAGE, &card, 0o644)?;
            }
        }
        Function::Train => {
            let dir = inputs.mnist_dir.as_ref().ok_or(ImageError::MissingInput {
                function: f,
                what: "the MNIST data",
                hint: "give --mnist-dir DIR (the folder of the four IDX files; `make data` downloads them)",
            })?;
            // Checked now, not at the first invocation in the cloud.
            crate::data::load(dir)?;
            for spec in crate::data::FILES {
                // `load` above found every file.
                if let Some(source) = crate::data::mnist::locate(dir, spec.name) {
                    let name = source.file_name().unwrap_or_default().to_string_lossy();
                    data.file(&format!("{MNIST_IN_IMAGE}/{name}"), &source, 0o644)?;
                }
            }
        }
    }

    let mut function = LayerSpec::new("function: bootstrap");
    function.file(BOOTSTRAP, &inputs.binary, 0o755)?;
    Ok([system, data, function])
}

/// The environment the image's config sets.
fn env(f: Function) -> Vec<String> {
    let mut env = vec![
        "PATH=/var/runtime:/usr/local/bin:/usr/bin:/bin".to_owned(),
        format!("LAMBDA_TASK_ROOT={TASK_ROOT}"),
        "LAMBDA_RUNTIME_DIR=/var/runtime".to_owned(),
        format!("SSL_CERT_FILE={CA_BUNDLE_IN_IMAGE}"),
    ];
    match f {
        Function::Predict => env.push(format!("MODEL_PATH={WEIGHTS_IN_IMAGE}")),
        Function::Train => env.push(format!("MNIST_DIR={MNIST_IN_IMAGE}")),
    }
    env
}

/// The binary is not the other function's (by the mark each function binary carries; a
/// binary without one, built elsewhere, is taken as it is).
fn check_function(inputs: &ImageInputs) -> Result<(), ImageError> {
    let other = match inputs.function {
        Function::Predict => Function::Train,
        Function::Train => Function::Predict,
    };
    let mark = |f: Function| match f {
        Function::Predict => crate::function_mark!("predict"),
        Function::Train => crate::function_mark!("train"),
    };
    let bytes = std::fs::read(&inputs.binary).map_err(|e| ImageError::Spec {
        what: "function binary",
        message: format!("cannot read {}: {e}", inputs.binary.display()),
    })?;
    let has = |m: &str| bytes.windows(m.len()).any(|w| w == m.as_bytes());
    if has(mark(other)) && !has(mark(inputs.function)) {
        return Err(ImageError::WrongFunction {
            function: inputs.function,
            other,
            binary: inputs.binary.clone(),
        });
    }
    Ok(())
}

/// Builds (or takes from `cache`) the layers, then the config and manifest.
pub fn assemble(inputs: &ImageInputs, cache: &LayerCache) -> Result<Image, ImageError> {
    let info = binary::inspect(&inputs.binary)?;
    if let Some(asked) = inputs.arch {
        if asked != info.arch {
            return Err(ImageError::ArchMismatch {
                asked,
                actual: info.arch,
                binary: inputs.binary.clone(),
            });
        }
    }
    check_function(inputs)?;
    let libs = libs::resolve(&inputs.binary, &info)?;
    let specs = layer_specs(inputs, &libs)?;
    let mtime = inputs.source_date_epoch;
    // The layers are independent: compress them side by side.
    let layers = std::thread::scope(|s| {
        let handles: Vec<_> = specs
            .iter()
            .map(|spec| s.spawn(move || cache.build(spec, mtime)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Result<Vec<_>, _>>()
    })?;

    let created = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime),
    )
    .to_string();
    let run_config = ConfigBuilder::default()
        .user(USER)
        .env(env(inputs.function))
        .entrypoint(vec![BOOTSTRAP.to_owned()])
        .working_dir(TASK_ROOT)
        .build()
        .map_err(spec_err("config"))?;
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
        .build()
        .map_err(spec_err("rootfs"))?;
    let history = layers
        .iter()
        .map(|l| {
            HistoryBuilder::default()
                .created(created.clone())
                .created_by(format!("lambda-cnn deploy image: {}", l.name))
                .build()
                .map_err(spec_err("history"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config = ImageConfigurationBuilder::default()
        .created(created.clone())
        .architecture(oci_arch(info.arch))
        .os(Os::Linux)
        .config(run_config)
        .rootfs(rootfs)
        .history(history)
        .build()
        .map_err(spec_err("config"))?;
    // No map-valued fields are set (labels, annotations): serde would write a HashMap in a
    // different order each run, and the digest with it.
    let config = serde_json::to_vec(&config).map_err(|e| ImageError::Spec {
        what: "config",
        message: e.to_string(),
    })?;
    let config_digest = sha256_digest(&config);

    let descriptor =
        |media: MediaType, size: u64, digest: &str| -> Result<Descriptor, ImageError> {
            let digest = OciDigest::from_str(digest).map_err(spec_err("digest"))?;
            Ok(Descriptor::new(media, size, digest))
        };
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            config.len() as u64,
            &config_digest,
        )?)
        .layers(
            layers
                .iter()
                .map(|l| descriptor(MediaType::ImageLayerGzip, l.size, &l.digest))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .build()
        .map_err(spec_err("manifest"))?;
    let manifest = serde_json::to_vec(&manifest).map_err(|e| ImageError::Spec {
        what: "manifest",
        message: e.to_string(),
    })?;
    let manifest_digest = sha256_digest(&manifest);
    Ok(Image {
        function: inputs.function,
        arch: info.arch,
        layers,
        config,
        config_digest,
        manifest,
        manifest_digest,
    })
}

/// Go's GOARCH names, which OCI configs use.
fn oci_arch(arch: Arch) -> oci_spec::image::Arch {
    match arch {
        Arch::X86_64 => oci_spec::image::Arch::Amd64,
        Arch::Arm64 => oci_spec::image::Arch::ARM64,
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

mod docker_archive;
mod oci_layout;

pub use docker_archive::write_docker_archive;
pub use oci_layout::{layout_size, read_layout, write_layout};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_layout_reads_back_as_the_same_image() {
        let (dir, exe, weights) = setup();
        let cache = LayerCache::new(dir.path().join("cache"));
        let img = assemble(&inputs(&exe, &weights), &cache).unwrap();
        let out = dir.path().join("layout");
        write_layout(&img, &out, "latest").unwrap();
        let back = read_layout(&out, Function::Predict).unwrap();
        assert_eq!(back.manifest_digest, img.manifest_digest);
        assert_eq!(back.config, img.config);
        assert_eq!(back.arch, img.arch);
        let digests = |i: &Image| {
            i.layers
                .iter()
                .map(|l| l.digest.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(digests(&back), digests(&img));
        assert_eq!(back.compressed_size(), img.compressed_size());
        assert_eq!(layout_size(&out).unwrap(), img.compressed_size());
        let err = read_layout(&dir.path().join("nothing"), Function::Train).unwrap_err();
        assert!(
            err.to_string().contains("deploy image --function train"),
            "{err}"
        );
    }

    fn inputs(binary: &Path, weights: &Path) -> ImageInputs {
        ImageInputs {
            function: Function::Predict,
            binary: binary.to_owned(),
            arch: None,
            weights: Some(weights.to_owned()),
            mnist_dir: None,
            ca_bundle: Some(weights.to_owned()),
            source_date_epoch: 0,
        }
    }

    /// A small dynamically linked binary of this machine: this test executable.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("w.safetensors");
        std::fs::write(&weights, b"weights").unwrap();
        (dir, std::env::current_exe().unwrap(), weights)
    }

    #[test]
    fn manifest_and_config_say_what_lambda_needs() {
        let (dir, exe, weights) = setup();
        let cache = LayerCache::new(dir.path().join("cache"));
        let img = assemble(&inputs(&exe, &weights), &cache).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
        assert_eq!(
            manifest["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 3);
        let config: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["User"], USER);
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!([BOOTSTRAP])
        );
        assert_eq!(config["config"]["WorkingDir"], TASK_ROOT);
        let env = config["config"]["Env"].to_string();
        assert!(
            env.contains(&format!("MODEL_PATH={WEIGHTS_IN_IMAGE}")),
            "{env}"
        );
        assert_eq!(config["created"], "1970-01-01T00:00:00Z");
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn asking_for_another_architecture_than_the_binarys_is_refused() {
        let (dir, exe, weights) = setup();
        let cache = LayerCache::new(dir.path().join("cache"));
        let mut i = inputs(&exe, &weights);
        i.arch = Some(Arch::Arm64);
        let err = assemble(&i, &cache).unwrap_err().to_string();
        assert!(
            err.contains("--arch arm64") && err.contains("--binary"),
            "{err}"
        );
    }

    #[test]
    fn a_static_arm64_binary_makes_an_arm64_image() {
        let (dir, _, weights) = setup();
        let bin = dir.path().join("bootstrap");
        std::fs::write(&bin, super::super::binary::tests_support::fake_elf(183)).unwrap();
        let cache = LayerCache::new(dir.path().join("cache"));
        let mut i = inputs(&bin, &weights);
        i.arch = Some(Arch::Arm64);
        let img = assemble(&i, &cache).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
        assert_eq!(config["architecture"], "arm64");
    }

    #[test]
    fn the_train_image_refuses_data_that_fails_its_check() {
        let (dir, exe, _) = setup();
        let cache = LayerCache::new(dir.path().join("cache"));
        let mut i = inputs(&exe, &exe);
        i.function = Function::Train;
        i.mnist_dir = Some(dir.path().to_owned());
        let err = assemble(&i, &cache).unwrap_err().to_string();
        assert!(err.contains("MNIST") && err.contains("not found"), "{err}");
        i.mnist_dir = None;
        let err = assemble(&i, &cache).unwrap_err().to_string();
        assert!(err.contains("--mnist-dir"), "{err}");
    }

    #[test]
    fn a_layout_is_rewritten_in_place_but_a_foreign_folder_is_left_alone() {
        let (dir, exe, weights) = setup();
        let cache = LayerCache::new(dir.path().join("cache"));
        let img = assemble(&inputs(&exe, &weights), &cache).unwrap();
        let out = dir.path().join("layout");
        write_layout(&img, &out, "latest").unwrap();
        std::fs::write(out.join("blobs/sha256/stale"), b"x").unwrap();
        write_layout(&img, &out, "latest").unwrap();
        let blobs = std::fs::read_dir(out.join("blobs/sha256")).unwrap().count();
        assert_eq!(
            blobs, 5,
            "manifest, config, three layers; the stale blob dropped"
        );
        let foreign = dir.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("notes.txt"), b"mine").unwrap();
        let err = write_layout(&img, &foreign, "latest")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an OCI image layout"), "{err}");
    }
}
