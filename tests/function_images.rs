//! The functions' OCI images, built by `deploy image` from the release binaries: reproducible,
//! read by independent tools (skopeo, umoci), and run the way Lambda runs them — read-only
//! root, writable /tmp only, non-root, nothing from the host — against the real Runtime API
//! emulator. Docker runs them too where an engine is available.

use common::emulator::{free_port, wait_for_port, workspace_binary, Emulator};
use common::image_run::{
    assert_predict_image_serves_real_digits, bwrap_command, correct_predictions, deploy_image,
    train_image_accuracy, umoci_unpack,
};
use common::*;
use lambda_cnn_test_kit as common;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn build_image(function: &str, binary: &Path, out: &Path, cache: &Path, extra: &[&str]) -> Value {
    deploy_image(function, binary, out, cache, extra)
}

fn layer_digests(v: &Value) -> Vec<String> {
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn two_builds_give_the_same_digest_and_a_new_binary_changes_only_its_layer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let predict = workspace_binary("predict");
    // Separate caches: the second build compresses everything again, yet matches.
    let tar_a = d.join("a.tar");
    let a = build_image(
        "predict",
        &predict,
        &d.join("a"),
        &d.join("cache-a"),
        &["--tar", tar_a.to_str().unwrap()],
    );
    let tar_b = d.join("b.tar");
    let b = build_image(
        "predict",
        &predict,
        &d.join("b"),
        &d.join("cache-b"),
        &["--tar", tar_b.to_str().unwrap()],
    );
    assert_eq!(a["manifest_digest"], b["manifest_digest"]);
    assert_eq!(
        sha256_file(&tar_a),
        sha256_file(&tar_b),
        "docker tars differ"
    );
    assert!(a["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["cached"] == false));

    // The same binary again, from the warm cache: nothing is compressed again.
    let again = build_image("predict", &predict, &d.join("a"), &d.join("cache-a"), &[]);
    assert_eq!(again["manifest_digest"], a["manifest_digest"]);
    assert!(again["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["cached"] == true));

    // A different binary: only the last layer (and so the manifest) changes.
    let changed = d.join("predict-changed");
    let mut bytes = std::fs::read(&predict).unwrap();
    bytes.extend_from_slice(b"a rebuilt binary");
    std::fs::write(&changed, bytes).unwrap();
    let c = build_image("predict", &changed, &d.join("c"), &d.join("cache-a"), &[]);
    let (la, lc) = (layer_digests(&a), layer_digests(&c));
    assert_eq!(
        la[..2],
        lc[..2],
        "the system and data layers must not change"
    );
    assert_ne!(la[2], lc[2]);
    assert_ne!(a["manifest_digest"], c["manifest_digest"]);
    let cached: Vec<bool> = c["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["cached"].as_bool().unwrap())
        .collect();
    assert_eq!(cached, [true, true, false]);

    // Another SOURCE_DATE_EPOCH is another image.
    let later = build_image(
        "predict",
        &predict,
        &d.join("later"),
        &d.join("cache-a"),
        &["--source-date-epoch", "1700000000"],
    );
    assert_ne!(later["manifest_digest"], a["manifest_digest"]);
}

#[test]
fn images_fit_the_size_budget() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = build_image(
        "predict",
        &workspace_binary("predict"),
        &d.join("p"),
        &d.join("c"),
        &[],
    );
    let t = build_image(
        "train",
        &workspace_binary("train"),
        &d.join("t"),
        &d.join("c"),
        &[],
    );
    let (ps, ts) = (
        p["compressed_size"].as_u64().unwrap(),
        t["compressed_size"].as_u64().unwrap(),
    );
    eprintln!("compressed: predict {ps} bytes, train {ts} bytes");
    assert!(ps <= 25_000_000, "predict image is {ps} bytes");
    assert!(ts <= 40_000_000, "train image is {ts} bytes");
}

#[test]
fn skopeo_and_umoci_read_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v = build_image(
        "predict",
        &workspace_binary("predict"),
        &d.join("p"),
        &d.join("c"),
        &[],
    );
    let skopeo = system_tool("skopeo", "skopeo");
    let o = Command::new(&skopeo)
        .arg("inspect")
        .arg(format!("oci:{}:latest", d.join("p").display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo inspect: {}", stderr(&o));
    let info: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["Digest"], v["manifest_digest"]);
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Layers"].as_array().unwrap().len(), 3, "{info}");
    // The raw manifest skopeo reads is a single-architecture OCI manifest, not an index.
    let o = Command::new(&skopeo)
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:latest", d.join("p").display()))
        .output()
        .unwrap();
    let raw: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );

    let rootfs = umoci_unpack(&d.join("p"), &d.join("bundle"));
    let bootstrap = rootfs.join("var/runtime/bootstrap");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&bootstrap).unwrap().permissions().mode();
    assert_eq!(mode & 0o755, 0o755, "bootstrap is executable");
    for dir in ["tmp", "proc", "dev", "var/task"] {
        assert!(rootfs.join(dir).is_dir(), "/{dir} missing");
    }
    assert!(rootfs
        .join("var/task/model-weights/mnist-cnn.safetensors")
        .is_file());
    assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file());
    let runtime: Value =
        serde_json::from_slice(&std::fs::read(d.join("bundle/config.json")).unwrap()).unwrap();
    assert_eq!(runtime["process"]["user"]["uid"], 993);
    assert_eq!(
        runtime["process"]["args"],
        json!(["/var/runtime/bootstrap"])
    );
}

#[test]
fn the_predict_image_serves_from_a_read_only_root_as_non_root() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    build_image(
        "predict",
        &workspace_binary("predict"),
        &d.join("p"),
        &d.join("c"),
        &[],
    );
    let rootfs = umoci_unpack(&d.join("p"), &d.join("bundle"));
    // It really ran inside: the image's weights path.
    assert_predict_image_serves_real_digits(&rootfs, &d.join("p"));
}

#[test]
fn the_train_image_trains_on_its_own_mnist_copy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    build_image(
        "train",
        &workspace_binary("train"),
        &d.join("t"),
        &d.join("c"),
        &[],
    );
    let rootfs = umoci_unpack(&d.join("t"), &d.join("bundle"));
    let accuracy = train_image_accuracy(&rootfs, &d.join("t"));
    assert!(accuracy > 0.6, "{accuracy}");
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, made with openssl.
fn make_test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=lambda-cnn test CA",
    ];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&ca);
    let mut csr = vec![
        "req",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ];
    csr.extend_from_slice(&ec);
    run(&csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// A static HTTPS server on 127.0.0.1 serving `root` (Python's http.server behind TLS): enough
/// for S3's path-style GetObject of a file. Killed on drop.
struct HttpsServer {
    child: std::process::Child,
    port: u16,
}

impl HttpsServer {
    fn start(root: &Path, cert: &Path, key: &Path) -> Self {
        let port = free_port();
        let script = "import http.server, ssl, sys, functools\n\
            h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n\
            s = http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[2])), h)\n\
            c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
            c.load_cert_chain(sys.argv[3], sys.argv[4])\n\
            s.socket = c.wrap_socket(s.socket, server_side=True)\n\
            s.serve_forever()\n";
        let child = Command::new("python3")
            .args(["-c", script])
            .arg(root)
            .arg(port.to_string())
            .arg(cert)
            .arg(key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 starts");
        wait_for_port(port, "the HTTPS test server", Duration::from_secs(20));
        HttpsServer { child, port }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_image_trusts_the_ca_bundle_it_carries_for_https() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, cert, key) = make_test_ca(d);
    let site = d.join("site/models");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::copy(shipped_weights(), site.join("mnist.safetensors")).unwrap();
    let server = HttpsServer::start(&d.join("site"), &cert, &key);
    let endpoint = format!("https://127.0.0.1:{}", server.port);
    let s3_env = [
        ("MODEL_S3_URI", "s3://models/mnist.safetensors"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let predict = workspace_binary("predict");

    // Built with the test CA as its bundle: the model loads over HTTPS, predictions come back.
    build_image(
        "predict",
        &predict,
        &d.join("trusting"),
        &d.join("c"),
        &["--ca-bundle", ca.to_str().unwrap()],
    );
    let rootfs = umoci_unpack(&d.join("trusting"), &d.join("bundle-trusting"));
    let mut emu = Emulator::start();
    emu.start_function_command(
        "predict",
        bwrap_command(&rootfs, &d.join("trusting"), &s3_env),
    );
    assert_eq!(correct_predictions(&emu, 3), 3, "{}", emu.logs());
    drop(emu);

    // Built with the host's public bundle, which does not hold the test CA: the TLS handshake
    // fails, so the CA bundle in the image is what decides.
    build_image("predict", &predict, &d.join("public"), &d.join("c"), &[]);
    let rootfs = umoci_unpack(&d.join("public"), &d.join("bundle-public"));
    let mut emu = Emulator::start();
    emu.start_function_command(
        "predict",
        bwrap_command(&rootfs, &d.join("public"), &s3_env),
    );
    let status = emu
        .wait_exit("predict", Duration::from_secs(60))
        .expect("predict exits when its model cannot be fetched");
    assert!(!status.success());
    let log = emu.log("predict");
    assert!(
        log.contains("cannot read s3://models/mnist.safetensors"),
        "{log}"
    );
}

#[test]
fn docker_runs_the_loaded_image_where_there_is_an_engine() {
    if !common::dataplane::docker_or_skip(
        "the loaded image under Docker (the other tests run it under bubblewrap)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tar = d.join("predict.tar");
    let tag = format!("test-{}", std::process::id());
    build_image(
        "predict",
        &workspace_binary("predict"),
        &d.join("p"),
        &d.join("c"),
        &["--tar", tar.to_str().unwrap(), "--tag", &tag],
    );
    let image = format!("lambda-cnn-predict:{tag}");
    let o = Command::new("docker")
        .args(["load", "-i"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(o.status.success(), "docker load: {}", stderr(&o));
    assert!(stdout(&o).contains(&image), "{}", stdout(&o));

    let mut emu = Emulator::start();
    let name = format!("lambda-cnn-test-{}", std::process::id());
    let mut cmd = Command::new("docker");
    cmd.args([
        "run",
        "--rm",
        "--name",
        &name,
        "--network",
        "host",
        "--read-only",
    ])
    .args(["--tmpfs", "/tmp", "--user", "993:990"])
    .args([
        "-e",
        "AWS_LAMBDA_RUNTIME_API",
        "-e",
        "AWS_LAMBDA_FUNCTION_NAME",
    ])
    .args([
        "-e",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "-e",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    ])
    .arg(&image);
    emu.start_function_command("predict", cmd);
    let correct = correct_predictions(&emu, 5);
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
    let _ = Command::new("docker").args(["rmi", &image]).output();
    assert_eq!(correct, 5, "{}", emu.logs());
}

#[test]
fn an_arm64_image_from_an_x86_64_binary_is_a_clear_error() {
    let o = deploy(&[
        "image",
        "--function",
        "predict",
        "--arch",
        "arm64",
        "--binary",
        workspace_binary("predict").to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "x86_64 binary");
}

/// Issue 24, item 6: `--function predict` with the train binary is refused, naming both,
/// before anything is written (it built a "predict" image around train).
#[test]
fn the_other_functions_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("predict");
    let train = workspace_binary("train");
    let o = deploy(&[
        "image",
        "--function",
        "predict",
        "--binary",
        train.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "is the train function's binary, not predict's");
    assert!(!out.exists());
}
