//! Running a built image the way Lambda runs it: unpacked by umoci, under bubblewrap (and
//! qemu-user, for an image of the other architecture).

use super::emulator::Emulator;
use super::{deploy, last_json, mnist_dir, stderr, system_tool, test_digit_png};
use base64::Engine;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `umoci unpack` of the layout at `layout` (ref `latest`) into `bundle`; returns the rootfs.
pub fn umoci_unpack(layout: &Path, bundle: &Path) -> PathBuf {
    let umoci = system_tool("umoci", "umoci");
    let o = Command::new(umoci)
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "umoci unpack: {}", stderr(&o));
    bundle.join("rootfs")
}

/// The image config in the layout at `layout`.
pub fn image_config(layout: &Path) -> Value {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| -> Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    blob(manifest["config"]["digest"].as_str().unwrap())
}

/// The `Env` of the image config in the layout at `layout`.
pub fn image_env(layout: &Path) -> Vec<(String, String)> {
    image_config(layout)["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| {
            let (k, v) = kv.as_str().unwrap().split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The image's entrypoint under bubblewrap, as Lambda runs it: the unpacked root read-only,
/// a fresh /tmp, uid 993 / gid 990, own namespaces but the host's network (to reach the
/// emulator), and only the image's environment plus `extra_env`. An image of the other
/// architecture (its config's `architecture`) runs under qemu-user, bound in read-only: it is
/// static, so the image's own loader and libraries are all that run.
pub fn bwrap_command(rootfs: &Path, layout: &Path, extra_env: &[(&str, &str)]) -> Command {
    let arch = image_config(layout)["architecture"]
        .as_str()
        .unwrap()
        .to_owned();
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut cmd = Command::new(system_tool("bwrap", "bubblewrap"));
    cmd.env_clear()
        .arg("--die-with-parent")
        .arg("--ro-bind")
        .arg(rootfs)
        .arg("/")
        .args(["--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"])
        .args([
            "--unshare-all",
            "--share-net",
            "--uid",
            "993",
            "--gid",
            "990",
        ])
        .args(["--chdir", "/var/task"]);
    if arch != host {
        let qemu = match arch.as_str() {
            "arm64" => system_tool("qemu-aarch64-static", "qemu-user-static"),
            "amd64" => system_tool("qemu-x86_64-static", "qemu-user-static"),
            other => panic!("an image for {other}"),
        };
        cmd.arg("--ro-bind")
            .arg(qemu)
            .args(["/dev/qemu", "/dev/qemu"]);
    }
    cmd.arg("/var/runtime/bootstrap");
    for (k, v) in image_env(layout) {
        cmd.env(k, v);
    }
    cmd.env("RAYON_NUM_THREADS", "2");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd
}

/// `deploy image` of `function` from `binary` into the layout `out`, with `extra` flags;
/// returns its `--json` object.
pub fn deploy_image(
    function: &str,
    binary: &Path,
    out: &Path,
    cache: &Path,
    extra: &[&str],
) -> Value {
    let mnist = mnist_dir();
    let mut args = vec![
        "image",
        "--function",
        function,
        "--binary",
        binary.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--mnist-dir",
        mnist.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = deploy(&args);
    assert!(o.status.success(), "deploy image failed: {}", stderr(&o));
    last_json(&o)
}

/// An API Gateway (HTTP API) event carrying `png` as the request body.
pub fn predict_event(png: &[u8]) -> Value {
    let path = crate::root().join("tests/fixtures/events/apigw-v2-predict.json");
    let mut e: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    e["body"] = json!(base64::engine::general_purpose::STANDARD.encode(png));
    e["isBase64Encoded"] = json!(true);
    e["headers"]["content-type"] = json!("image/png");
    e
}

/// Sends test digits 0..n to the running predict function; returns how many came back right.
pub fn correct_predictions(emu: &Emulator, n: usize) -> usize {
    (0..n)
        .filter(|&i| {
            let (png, label) = test_digit_png(i);
            let r = emu.invoke("predict", &predict_event(&png));
            assert_eq!(r["statusCode"], 200, "{r}\n{}", emu.logs());
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            body["digit"] == label as u64
        })
        .count()
}

/// Runs the unpacked predict image (`rootfs`, from the layout `layout`) under bubblewrap
/// against the Runtime API emulator: 10 real test digits must come back right, the process
/// must stay up, and the weights it loaded must be the image's own.
pub fn assert_predict_image_serves_real_digits(rootfs: &Path, layout: &Path) {
    let mut emu = Emulator::start();
    emu.start_function_command("predict", bwrap_command(rootfs, layout, &[]));
    assert_eq!(correct_predictions(&emu, 10), 10, "{}", emu.logs());
    assert!(emu.functions_alive());
    let log = emu.log("predict");
    assert!(
        log.contains("/var/task/model-weights/mnist-cnn.safetensors"),
        "{log}"
    );
}

/// Runs the unpacked train image the same way for one epoch over 1000 samples; returns the
/// test accuracy it answered.
pub fn train_image_accuracy(rootfs: &Path, layout: &Path) -> f64 {
    let mut emu = Emulator::start();
    emu.start_function_command("train", bwrap_command(rootfs, layout, &[]));
    let r = emu.invoke("train", &json!({"epochs": 1, "limit": 1000}));
    assert_eq!(r["statusCode"], 200, "{r}\n{}", emu.logs());
    r["body"]
        .as_str()
        .and_then(|b| b.trim_matches('"').strip_prefix("Test accuracy: "))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no test accuracy in {r}"))
}
