//! The deploy binary, run as a user runs it against the local stack: its config, the
//! stand-ins' endpoints in its environment, its `--json` lines read back.

use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;

#[derive(Clone)]
pub struct DeployCli {
    pub bin: PathBuf,
    pub config: PathBuf,
    /// The stand-ins' endpoints and credentials.
    pub env: Vec<(String, String)>,
    pub root: PathBuf,
}

impl DeployCli {
    /// `deploy --config CONFIG ARGS`, its stdout; stderr goes to the user. A failure names
    /// the command.
    pub async fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        let (code, out) = self.status(args).await?;
        if code != Some(0) {
            bail!(
                "failed ({}): {}",
                code.map_or("signal".into(), |c| c.to_string()),
                self.describe(args)
            );
        }
        Ok(out)
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.root)
            .stdin(Stdio::null())
            // Interrupted, the job stops the command it was running too.
            .kill_on_drop(true);
        cmd
    }

    /// [`Self::output`] without failing on the exit status: (status, stdout).
    pub async fn status(&self, args: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
        let out = self
            .command(args)
            .stderr(Stdio::inherit())
            .output()
            .await
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }

    /// Runs it with stdout to the user too.
    pub async fn show(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = self
            .command(args)
            .status()
            .await
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        if !status.success() {
            bail!("failed ({status}): {}", self.describe(args));
        }
        Ok(())
    }

    /// Its JSON lines (`--json`), each parsed.
    pub async fn json_lines(&self, args: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
        json_lines(&self.output(args).await?)
    }

    /// Its last JSON line (`--json`).
    pub async fn last_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = self.output(args).await?;
        last_json(&out).with_context(|| format!("{} printed no JSON", self.describe(args)))
    }

    fn describe(&self, args: &[&str]) -> String {
        format!(
            "{} --config {} {}",
            self.bin.display(),
            self.config.display(),
            args.join(" ")
        )
    }
}

/// The lines of `out` that are JSON objects.
pub fn json_lines(out: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

/// The last line of `out`, parsed as JSON.
pub fn last_json(out: &str) -> anyhow::Result<serde_json::Value> {
    let last = out.trim().lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("not JSON: {last}"))
}

/// The project's deploy.toml with the architecture the images are for (doctor compares them),
/// written to `dir`, its IAM policies linked beside it (the config names them relative to
/// itself).
pub fn write_config(root: &Path, dir: &Path, arch: &str) -> anyhow::Result<PathBuf> {
    let source = root.join("infra/deploy.toml");
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("cannot read {}", source.display()))?;
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("architecture =") {
                format!("architecture = \"{arch}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let config = dir.join("deploy.toml");
    std::fs::write(&config, text).with_context(|| format!("cannot write {}", config.display()))?;
    let iam = dir.join("iam");
    if !iam.is_symlink() {
        let _ = std::fs::remove_dir_all(&iam);
        std::os::unix::fs::symlink(root.join("infra/iam"), &iam)
            .with_context(|| format!("cannot link {}", iam.display()))?;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_told_from_progress_lines() {
        let out = "building…\n{\"a\":1}\nnote\n{\"b\":2}\n";
        let lines = json_lines(out).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(last_json(out).unwrap()["b"], 2);
        assert!(last_json("no json\n").is_err());
        assert!(json_lines("{broken\n").is_err());
    }

    #[test]
    fn the_config_names_the_architecture_and_finds_its_policies() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("infra/iam")).unwrap();
        std::fs::write(
            root.path().join("infra/deploy.toml"),
            "name = \"x\"\narchitecture = \"x86_64\"\nmemory = 1\n",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(root.path(), dir.path(), "arm64").unwrap();
        let text = std::fs::read_to_string(config).unwrap();
        assert_eq!(text, "name = \"x\"\narchitecture = \"arm64\"\nmemory = 1\n");
        assert!(dir.path().join("iam").is_symlink());
        // Again: idempotent.
        write_config(root.path(), dir.path(), "arm64").unwrap();
    }
}
