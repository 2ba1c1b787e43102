//! `make serve` (`local serve`, crates/local): on a fresh checkout after a build, it starts the
//! Runtime API emulator and predict, prints the page's address only once it answers, serves
//! the page there, and stops everything on Ctrl-C.

use common::emulator::{cargo_lambda, free_port, workspace_binary};
use lambda_cnn_test_kit as common;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn serve_prints_the_page_address_serves_the_page_and_stops_on_ctrl_c() {
    let port = free_port();
    let mut child = Command::new(workspace_binary("local"))
        .arg("serve")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--predict")
        .arg(workspace_binary("predict"))
        .arg("--cargo-lambda")
        .arg(cargo_lambda())
        .env("PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = Instant::now();
    let url = loop {
        let line = lines
            .next()
            .expect("`local serve` printed the page's address before exiting")
            .unwrap();
        if let Some(url) = line.strip_prefix("the digit page: ") {
            break url.trim().to_owned();
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no address yet");
    };
    assert_eq!(
        url,
        format!("http://127.0.0.1:{port}/lambda-url/predict/"),
        "PORT is honoured"
    );
    let mut page = ureq::get(&url).call().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains("Draw a digit"));

    // Ctrl-C: everything it started stops, and the port is free again.
    sigint(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l == "stopped"), "{rest:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the emulator still listens"
    );
}

/// SIGINT, as a terminal's Ctrl-C sends it.
fn sigint(pid: u32) {
    let ok = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}
