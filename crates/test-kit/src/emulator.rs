//! The real Lambda Runtime API emulator (`cargo lambda watch --only-lambda-apis`) and the
//! release-built function binaries running against it, as separate processes on 127.0.0.1.
//! Everything started here is stopped when the guard is dropped.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, what: &str, timeout: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < timeout,
            "{what} did not open 127.0.0.1:{port} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tool `make test` installs from PyPI into the project venv: `$env_var` when set, else
/// `.venv/bin/<name>`.
pub fn venv_tool(env_var: &str, name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join(".venv/bin").join(name));
    assert!(
        path.exists(),
        "{} not found: run `make test`, which installs {package} from PyPI into .venv",
        path.display()
    );
    path
}

/// The cargo-lambda binary (`CARGO_LAMBDA` overrides).
pub fn cargo_lambda() -> PathBuf {
    venv_tool("CARGO_LAMBDA", "cargo-lambda", "cargo-lambda")
}

/// A binary of the workspace built by the same `cargo test --release` run (the functions
/// live in other packages, so there is no CARGO_BIN_EXE_ for them).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap(); // target/release/deps → target/release
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --release --workspace` (make test does)",
        path.display()
    );
    path
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// The emulator plus the function processes attached to it.
pub struct Emulator {
    pub port: u16,
    emulator: Proc,
    functions: Vec<Proc>,
    pub dir: tempfile::TempDir,
    agent: ureq::Agent,
}

fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Proc {
        name: name.to_owned(),
        child,
        log,
    }
}

impl Emulator {
    pub fn start() -> Self {
        Self::start_in(crate::root(), tempfile::tempdir().unwrap())
    }

    /// An emulator that serves functions named `names` (cargo-lambda accepts only names of
    /// binaries of the Cargo project it runs in: it gets a stub project with those).
    pub fn start_for(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("stub-project");
        std::fs::create_dir_all(&project).unwrap();
        let mut manifest = String::from(
            "[package]\nname = \"runtime-api-stand-in\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[workspace]\n",
        );
        for n in names {
            manifest.push_str(&format!("\n[[bin]]\nname = \"{n}\"\npath = \"main.rs\"\n"));
        }
        std::fs::write(project.join("Cargo.toml"), manifest).unwrap();
        std::fs::write(project.join("main.rs"), "fn main() {}\n").unwrap();
        Self::start_in(&project, dir)
    }

    fn start_in(project: &Path, dir: tempfile::TempDir) -> Self {
        // A port found free may be taken again before the emulator binds it (by a parallel
        // test's connection): the emulator then exits while the port answers for someone
        // else. So the emulator's own "listening" line is what counts, and a lost race is
        // retried on another port.
        let mut attempt = 0;
        let (port, emulator) = loop {
            attempt += 1;
            let port = free_port();
            let mut emulator = spawn(
                "cargo-lambda-watch",
                Command::new(cargo_lambda())
                    .args([
                        "lambda",
                        "watch",
                        "--only-lambda-apis",
                        "--invoke-address",
                        "127.0.0.1",
                        "--invoke-port",
                    ])
                    .arg(port.to_string())
                    .current_dir(project),
                dir.path(),
            );
            let listening = format!("runtime_addr=127.0.0.1:{port}");
            let start = Instant::now();
            let up = loop {
                let log = std::fs::read_to_string(&emulator.log).unwrap_or_default();
                if log.contains(&listening) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break true;
                }
                if emulator.child.try_wait().ok().flatten().is_some() {
                    break false;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "cargo lambda watch did not listen on 127.0.0.1:{port} within 60 s:\n{log}"
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            if up {
                break (port, emulator);
            }
            let log = std::fs::read_to_string(&emulator.log).unwrap_or_default();
            assert!(attempt < 3, "cargo lambda watch exited at start:\n{log}");
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        Emulator {
            port,
            emulator,
            functions: Vec::new(),
            dir,
            agent,
        }
    }

    /// Starts the function binary `name` as the function `name`, with extra environment.
    pub fn start_function(&mut self, name: &str, env: &[(&str, &str)]) {
        let mut cmd = Command::new(workspace_binary(name));
        cmd.env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{}/.rt/{name}", self.port),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("RAYON_NUM_THREADS", "2")
        .env_remove("MODEL_S3_URI")
        .env_remove("MODEL_BUCKET")
        .current_dir(crate::root());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let p = spawn(name, &mut cmd, self.dir.path());
        self.functions.push(p);
    }

    /// Starts `cmd` as the function `name`: a function binary run some other way (in an
    /// image's root filesystem, in a container). Only the Runtime API variables are added.
    pub fn start_function_command(&mut self, name: &str, mut cmd: Command) {
        cmd.env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{}/.rt/{name}", self.port),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024");
        let p = spawn(name, &mut cmd, self.dir.path());
        self.functions.push(p);
    }

    /// Stops function `name` (to start another process under the same name).
    pub fn stop_function(&mut self, name: &str) {
        if let Some(i) = self.functions.iter().position(|p| p.name == name) {
            let mut p = self.functions.remove(i);
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// The Lambda Invoke API endpoint this emulator serves.
    pub fn invoke_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits for function `name` to exit (e.g. a failed init); returns its exit status.
    pub fn wait_exit(&mut self, name: &str, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        let p = self.functions.iter_mut().find(|p| p.name == name).unwrap();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Invokes function `name` with a raw payload; returns the HTTP status and the body.
    pub fn invoke_raw(&self, name: &str, payload: &[u8]) -> (u16, String) {
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{name}/invocations",
            self.port
        );
        match self.agent.post(&url).send(payload) {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(e) => panic!("invoking {name} failed: {e}\n{}", self.logs()),
        }
    }

    pub fn invoke(&self, name: &str, payload: &serde_json::Value) -> serde_json::Value {
        let (_, body) = self.invoke_raw(name, payload.to_string().as_bytes());
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{name} answered non-JSON {body:?}: {e}\n{}", self.logs()))
    }

    /// True while every function process started is still running (none crashed).
    pub fn functions_alive(&mut self) -> bool {
        self.functions
            .iter_mut()
            .all(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    pub fn pid(&self, name: &str) -> u32 {
        self.functions
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .child
            .id()
    }

    pub fn log(&self, name: &str) -> String {
        let p = self
            .functions
            .iter()
            .chain([&self.emulator])
            .find(|p| p.name == name)
            .unwrap();
        std::fs::read_to_string(&p.log).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        self.functions
            .iter()
            .chain([&self.emulator])
            .map(|p| {
                format!(
                    "--- {} ---\n{}",
                    p.name,
                    std::fs::read_to_string(&p.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for p in self.functions.iter_mut().chain([&mut self.emulator]) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}
