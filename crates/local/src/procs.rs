//! The child processes a local command starts: each in its own process group (so a terminal's
//! Ctrl-C reaches this process, which stops them in order), each logging to a file of its own,
//! all stopped together.

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

/// The processes started, in order, logging into `dir`.
pub struct Procs {
    dir: PathBuf,
    items: Vec<Proc>,
}

impl Procs {
    pub fn new(dir: &Path) -> Self {
        Procs {
            dir: dir.to_owned(),
            items: Vec::new(),
        }
    }

    /// Starts `cmd` as `name`, its stdout and stderr into `DIR/NAME.log`.
    pub fn start(&mut self, name: &str, mut cmd: Command) -> anyhow::Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = file
            .try_clone()
            .with_context(|| format!("cannot reopen {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        self.items.push(Proc {
            name: name.to_owned(),
            log,
            child,
        });
        Ok(())
    }

    /// The first one that has exited, with its status: what a caller waiting on them reports.
    pub fn exited(&mut self) -> Option<(&str, String, &Path)> {
        self.items
            .iter_mut()
            .find_map(|p| match p.child.try_wait() {
                Ok(Some(status)) => Some((p.name.as_str(), status.to_string(), p.log.as_path())),
                Ok(None) => None,
                Err(e) => Some((p.name.as_str(), e.to_string(), p.log.as_path())),
            })
    }

    /// The last one started, when it has exited: a process that failed at start.
    pub fn last_exited(&mut self) -> Option<(&str, String, &Path)> {
        let p = self.items.last_mut()?;
        match p.child.try_wait() {
            Ok(Some(status)) => Some((p.name.as_str(), status.to_string(), p.log.as_path())),
            Ok(None) => None,
            Err(e) => Some((p.name.as_str(), e.to_string(), p.log.as_path())),
        }
    }

    /// The log of the one named `name`.
    pub fn log(&self, name: &str) -> Option<&Path> {
        self.items
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.log.as_path())
    }

    /// SIGTERM to each group, the last started first; SIGKILL to those still there after
    /// `grace`.
    pub async fn stop_all(&mut self, grace: Duration) {
        for p in self.items.iter_mut().rev() {
            if matches!(p.child.try_wait(), Ok(None)) {
                signal_group(&p.child, libc::SIGTERM);
            }
        }
        for p in &mut self.items {
            if tokio::time::timeout(grace, p.child.wait()).await.is_err() {
                signal_group(&p.child, libc::SIGKILL);
                let _ = p.child.wait().await;
            }
        }
    }
}

fn signal_group(child: &Child, signal: libc::c_int) {
    if let Some(pid) = child.id().and_then(|id| libc::pid_t::try_from(id).ok()) {
        // SAFETY: kill(2) takes plain integers; a negative pid names the group this child
        // leads (process_group(0) made it), and no memory is shared.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// Resolves on SIGTERM or SIGINT (a terminal's Ctrl-C). Both are caught from this call on, so
/// a command calls it before it starts anything it must stop.
pub fn interrupted() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).context("no free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// Whether `port` on 127.0.0.1 can be bound now.
pub fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The Lambda Runtime API emulator (`cargo lambda watch --only-lambda-apis`) on
/// 127.0.0.1:`port` for `functions`. cargo-lambda serves only functions named after binaries
/// of the project it runs in: it runs in a stub project, written to `stub_dir`, with those.
pub fn runtime_api_command(
    cargo_lambda: &Path,
    port: u16,
    stub_dir: &Path,
    functions: &[&str],
) -> anyhow::Result<Command> {
    std::fs::create_dir_all(stub_dir)
        .with_context(|| format!("cannot create {}", stub_dir.display()))?;
    let mut manifest = String::from(
        "[package]\nname = \"runtime-api-stand-in\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[workspace]\n",
    );
    for f in functions {
        manifest.push_str(&format!("\n[[bin]]\nname = \"{f}\"\npath = \"main.rs\"\n"));
    }
    std::fs::write(stub_dir.join("Cargo.toml"), manifest)
        .and_then(|()| std::fs::write(stub_dir.join("main.rs"), "fn main() {}\n"))
        .with_context(|| format!("cannot write the stub project in {}", stub_dir.display()))?;
    let mut cmd = Command::new(cargo_lambda);
    cmd.args(["lambda", "watch", "--only-lambda-apis"])
        .args([
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
            &port.to_string(),
        ])
        .current_dir(stub_dir);
    Ok(cmd)
}
