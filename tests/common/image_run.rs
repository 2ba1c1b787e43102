//! Running a built image the way Lambda runs it: unpacked by umoci, under bubblewrap.

use super::{deploy, last_json, mnist_dir, stderr, system_tool};
use serde_json::Value;
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

/// The `Env` of the image config in the layout at `layout`.
pub fn image_env(layout: &Path) -> Vec<(String, String)> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| -> Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    config["config"]["Env"]
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
/// emulator), and only the image's environment plus `extra_env`.
pub fn bwrap_command(rootfs: &Path, layout: &Path, extra_env: &[(&str, &str)]) -> Command {
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
        .args(["--chdir", "/var/task", "/var/runtime/bootstrap"]);
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
