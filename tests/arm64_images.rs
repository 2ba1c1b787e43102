//! arm64 (Graviton) images from functions cross-built on this machine (`make build-arm64`):
//! the image carries the arm64 loader and libraries from the cross sysroot — never a host file
//! — and runs the way Lambda runs it (unpacked root read-only, uid 993, nothing from the host)
//! with qemu-user as the interpreter, against the real Runtime API emulator.

use common::image_run::{
    assert_predict_image_serves_real_digits, deploy_image, train_image_accuracy, umoci_unpack,
};
use common::*;
use lambda_cnn_test_kit as common;
use std::path::{Path, PathBuf};

/// The ELF machine of the file at `path`, if it is an ELF file.
fn elf_machine(path: &Path) -> Option<u16> {
    let head = std::fs::read(path).ok()?;
    (head.len() >= 20 && head.starts_with(b"\x7fELF"))
        .then(|| u16::from_le_bytes([head[18], head[19]]))
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(files(&entry.path()));
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    out
}

const EM_AARCH64: u16 = 183;

#[test]
fn the_arm64_predict_image_carries_only_arm64_code_and_reads_real_digits_right() {
    let Some(binary) = arm64_function("predict") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let built = deploy_image("predict", &binary, &d.join("p"), &d.join("c"), &[]);
    assert_eq!(built["architecture"], "arm64", "{built}");

    let rootfs = umoci_unpack(&d.join("p"), &d.join("bundle"));
    let loader = rootfs.join("lib/ld-linux-aarch64.so.1");
    assert_eq!(
        elf_machine(&loader),
        Some(EM_AARCH64),
        "{}",
        loader.display()
    );
    let elves: Vec<(PathBuf, u16)> = files(&rootfs)
        .into_iter()
        .filter_map(|f| elf_machine(&f).map(|m| (f, m)))
        .collect();
    // The bootstrap, the loader, libc, libgcc_s, libm at least; all of them arm64.
    assert!(elves.len() >= 4, "{elves:?}");
    assert!(
        elves.iter().all(|(_, m)| *m == EM_AARCH64),
        "a file of another architecture in the arm64 image: {elves:?}"
    );

    // The weights the image carries, and the NEON kernels, are what runs.
    assert_predict_image_serves_real_digits(&rootfs, &d.join("p"));
}

#[test]
fn the_arm64_train_image_trains_on_its_own_mnist_copy() {
    let Some(binary) = arm64_function("train") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let built = deploy_image("train", &binary, &d.join("t"), &d.join("c"), &[]);
    assert_eq!(built["architecture"], "arm64", "{built}");
    let rootfs = umoci_unpack(&d.join("t"), &d.join("bundle"));
    // 1000 samples, one epoch: well above chance (0.1), as on x86_64.
    let accuracy = train_image_accuracy(&rootfs, &d.join("t"));
    assert!(accuracy > 0.6, "{accuracy}");
}

#[test]
fn deploy_build_cross_compiles_for_arm64() {
    let o = deploy(&["--dry-run", "build", "--arch", "arm64"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(
            "cargo build --release --locked --target aarch64-unknown-linux-gnu -p lambda-cnn-predict -p lambda-cnn-train"
        ),
        "{}",
        stdout(&o)
    );
    // --json is global: the plan as one object.
    let o = deploy(&["--dry-run", "--json", "build", "--arch", "arm64"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(plan["arch"], "arm64", "{plan}");
    assert!(plan["would_run"]
        .as_str()
        .unwrap()
        .contains("--target aarch64-unknown-linux-gnu"));
}
