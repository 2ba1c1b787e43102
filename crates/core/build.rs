//! Records the git revision the binaries are built from, for `deploy --version` (a user
//! reporting a problem can say exactly which build they ran).

use std::path::Path;
use std::process::Command;

fn main() {
    // This crate is crates/core of the repository.
    let git = Path::new("../../.git");
    // Rebuild when HEAD moves: it names the branch, the branch's ref names the commit. Only
    // files that exist are named: cargo takes a missing one as changed, and would rebuild this
    // crate and everything above it on every build (a clone without packed-refs has none).
    if git.is_dir() {
        let watch = |path: &str| {
            if git.join(path).exists() {
                println!("cargo:rerun-if-changed=../../.git/{path}");
            }
        };
        watch("HEAD");
        if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
            if let Some(r) = head.trim().strip_prefix("ref: ") {
                if git.join(r).exists() {
                    watch(r);
                } else if let Some(dir) = Path::new(r).parent().and_then(Path::to_str) {
                    // The branch is packed: its next commit writes the ref file into this
                    // directory (cargo watches a directory's files).
                    watch(dir);
                }
            }
        }
        // Where the ref is packed (a fresh clone's may be), a new commit rewrites this file.
        watch("packed-refs");
    }
    println!("cargo:rerun-if-env-changed=LAMBDA_CNN_GIT_REV");
    let rev = std::env::var("LAMBDA_CNN_GIT_REV")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            let rev = String::from_utf8(out.stdout).ok()?.trim().to_owned();
            (out.status.success() && !rev.is_empty()).then_some(rev)
        })
        .unwrap_or_else(|| "unknown revision".to_owned());
    println!("cargo:rustc-env=LAMBDA_CNN_GIT_REV={rev}");
}
