//! The real binary: `meridian check-config` and `meridian serve`, their output and exit codes
//! (0 clean, 1 runtime failure, 2 invalid configuration), and its signals (SIGHUP reloads,
//! SIGTERM stops).
//!
//! Every child process is owned by a guard that kills it on drop, and every wait is bounded, so
//! a failing test never leaves a server behind or hangs the suite.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::client::{Ask, a_records};
use crate::support::{CONFIG, CONFIG_FILE, config_dir};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// Upper bound for any one step of a child process (start, reload, exit).
const STEP: Duration = Duration::from_secs(20);

/// The binary with a predictable environment: default log filter, no colours.
fn meridian() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A child process that is killed if the test lets go of it while it still runs.
struct Guard {
    child: Child,
}

impl Guard {
    fn spawn(command: &mut Command) -> Guard {
        Guard {
            child: command.spawn().expect("start the meridian binary"),
        }
    }

    /// Waits (bounded) for the process to exit.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "meridian did not exit within {STEP:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal through the shell's built-in `kill`: `/bin/sh` is on every machine,
    /// the `kill` program (procps) is not.
    fn signal(&self, name: &str) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{name} {}", self.child.id()))
            .status()
            .expect("run sh -c kill");
        assert!(status.success(), "kill -{name} failed");
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished process printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `meridian args..` to completion (bounded).
fn run(args: &[&str]) -> Finished {
    let mut guard = Guard::spawn(meridian().args(args));
    // Drain both pipes on threads, so a chatty child cannot block on a full pipe.
    let stdout = drain(guard.child.stdout.take().expect("piped stdout"));
    let stderr = drain(guard.child.stderr.take().expect("piped stderr"));
    let status = guard.wait();
    Finished {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: strip_ansi(&stderr.join().expect("stderr reader")),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Log lines are plain text with NO_COLOR; strip escape sequences anyway, so that a terminal
/// detection change cannot break the parsing below.
fn strip_ansi(text: &str) -> String {
    let mut res = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            res.push(c);
        }
    }
    res
}

/// A running `meridian serve` and the log lines it has written so far.
struct Server {
    guard: Guard,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Server {
    /// Starts `meridian serve args..`, with the control plane on an ephemeral loopback port
    /// unless `args` choose one.
    fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// As [`Server::start`], with extra environment variables.
    fn start_with_env(args: &[&str], env: &[(&str, &std::path::Path)]) -> Server {
        let mut command = meridian();
        command.arg("serve").args(args).stdout(Stdio::null());
        command.envs(env.iter().copied());
        if !args.contains(&"--control") {
            command.args(["--control", "127.0.0.1:0"]);
        }
        Server::spawn(&mut command)
    }

    /// Runs `command` (a configured `meridian` or a shell that execs it) as a server.
    fn spawn(command: &mut Command) -> Server {
        let mut guard = Guard::spawn(command);
        let stderr = guard.child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(strip_ansi(&line)).is_err() {
                    break;
                }
            }
        });
        Server {
            guard,
            lines,
            log: Vec::new(),
        }
    }

    /// Starts `meridian serve args..` and waits for its DNS/UDP address, from the startup line
    /// `listening for DNS/UDP on ADDR`.
    fn serve(args: &[&str]) -> (Server, SocketAddr) {
        let mut server = Server::start(args);
        let addr = server.address("listening for DNS/UDP on ");
        (server, addr)
    }

    /// Waits for the log line `PREFIX ADDR` and returns ADDR.
    fn address(&mut self, prefix: &str) -> SocketAddr {
        let line = self.wait_for(prefix, |line| line.contains(prefix));
        let rest = &line[line.find(prefix).expect("matched above") + prefix.len()..];
        let addr = rest.split_whitespace().next().unwrap_or_default();
        addr.parse()
            .unwrap_or_else(|_| panic!("no address in {line:?}"))
    }

    /// Waits (bounded) for a log line satisfying `wanted` and returns it.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        self.next_line_with(what, wanted).unwrap_or_else(|| {
            panic!(
                "meridian exited before logging {what}; the log:\n{}",
                self.log.join("\n")
            )
        })
    }

    /// Waits (bounded) for a log line satisfying `wanted`; `None` when the process closed its
    /// stderr (it exited) first.
    fn next_line_with(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if wanted(&line) {
                        return Some(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "no log line {what} within {STEP:?}; the log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Sends SIGTERM and returns the exit status (bounded).
    fn terminate(&mut self) -> ExitStatus {
        self.guard.signal("TERM");
        self.guard.wait()
    }
}

#[test]
fn check_config_accepts_the_embedded_example() {
    let out = run(&["check-config"]);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", out.stderr);
    assert!(out.stdout.contains("ok"), "stdout:\n{}", out.stdout);
    assert!(
        out.stdout.contains("5 datacenter(s)"),
        "stdout:\n{}",
        out.stdout
    );
}

#[test]
fn check_config_accepts_the_shipped_example_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/zones/example.yaml");
    let out = run(&["check-config", "--config", path]);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("{path}: ok")),
        "stdout:\n{}",
        out.stdout
    );
}

#[test]
fn check_config_accepts_the_test_config() {
    let dir = config_dir(CONFIG);
    let path = dir.path().join(CONFIG_FILE);
    let out = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", out.stderr);
}

#[test]
fn check_config_lists_every_problem_with_its_path() {
    let config = CONFIG
        .replace("a: [192.0.2.3]", "a: [192.0.2.3, 192.0.2.300]")
        .replace("policy: nearest", "policy: closest")
        .replace(
            "      sa-east:  { a: [192.0.2.5]",
            "      mars:     { a: [192.0.2.9] }\n      sa-east:  { a: [192.0.2.5]",
        );
    let dir = config_dir(&config);
    let path = dir.path().join(CONFIG_FILE);
    let out = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{}", out.stderr);
    for expected in [
        "services.www.pools.eu-west.a[1]: \"192.0.2.300\" is not an IPv4 address",
        "services.www.pools.mars: unknown datacenter \"mars\"",
        "services.www.policy: unknown policy \"closest\"",
    ] {
        assert!(
            out.stderr.contains(expected),
            "missing {expected:?} in stderr:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("invalid configuration"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_config_reports_missing_files() {
    let dir = config_dir(CONFIG);
    std::fs::remove_file(dir.path().join("geo.mmdb")).unwrap();
    std::fs::remove_file(dir.path().join("example.com.zone")).unwrap();
    let path = dir.path().join(CONFIG_FILE);
    let out = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{}", out.stderr);
    assert!(out.stderr.contains("geo.database"), "{}", out.stderr);
    assert!(out.stderr.contains("zones[0].file"), "{}", out.stderr);

    let out = run(&["check-config", "--config", "/nonexistent/meridian.yaml"]);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{}", out.stderr);
}

#[test]
fn serve_refuses_an_invalid_config_with_exit_code_2() {
    let dir = config_dir(&CONFIG.replace("policy: nearest", "policy: closest"));
    let path = dir.path().join(CONFIG_FILE);
    let out = run(&[
        "serve",
        "--config",
        path.to_str().unwrap(),
        "--dns",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{}", out.stderr);
    assert!(out.stderr.contains("services.www.policy"), "{}", out.stderr);
}

#[test]
fn serve_fails_with_exit_code_1_when_it_cannot_bind() {
    let dir = config_dir(CONFIG);
    let path = dir.path().join(CONFIG_FILE);
    // Hold the port, so that the server cannot have it.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["serve", "--config", path.to_str().unwrap(), "--dns", &addr]);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains(&addr),
        "names the address:\n{}",
        out.stderr
    );
}

#[tokio::test]
async fn serve_answers_and_exits_cleanly_on_sigterm() {
    let dir = config_dir(CONFIG);
    let path = dir.path().join(CONFIG_FILE);
    let (mut server, udp) =
        Server::serve(&["--config", path.to_str().unwrap(), "--dns", "127.0.0.1:0"]);
    assert!(udp.ip().is_loopback() && udp.port() != 0, "{udp}");

    let reply = Ask::new("www.example.com", RecordType::A)
        .ecs("81.2.69.0/24")
        .udp(udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 3)]);
    // TCP on the same port.
    let reply = Ask::new("ns1.example.com", RecordType::A).tcp(udp).await;
    assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 53)]);

    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log.join("\n"));
}

/// Issue 14: `RUST_LOG=meridian::dns=debug` shows each answer with the client, the routing
/// decision and the scope; at the default level nothing per query is logged.
#[tokio::test]
async fn debug_logging_shows_each_answer_with_its_decision_and_scope() {
    let dir = config_dir(CONFIG);
    let path = dir.path().join(CONFIG_FILE);
    let filter = std::path::Path::new("info,meridian::dns=debug");
    let mut server = Server::start_with_env(
        &["--config", path.to_str().unwrap(), "--dns", "127.0.0.1:0"],
        &[("RUST_LOG", filter)],
    );
    let udp = server.address("listening for DNS/UDP on ");
    let reply = Ask::new("www.example.com", RecordType::A)
        .ecs("81.2.69.0/24")
        .udp(udp)
        .await;
    assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 3)]);
    let line = server.wait_for("the answer's debug line", |line| line.contains("answered"));
    for field in [
        "client=81.2.69.0",
        "source_prefix=24",
        "name=www.example.com",
        "qtype=A",
        "rcode=No Error",
        "scope=",
        "service=\"www.example.com\"",
        "datacenter=\"eu-west\"",
        "failed_open=false",
    ] {
        assert!(line.contains(field), "{field} missing from {line:?}");
    }
    assert_eq!(server.terminate().code(), Some(0));

    // The default level: the same query logs nothing per query.
    let (mut server, udp) =
        Server::serve(&["--config", path.to_str().unwrap(), "--dns", "127.0.0.1:0"]);
    Ask::new("www.example.com", RecordType::A)
        .ecs("81.2.69.0/24")
        .udp(udp)
        .await;
    assert_eq!(server.terminate().code(), Some(0));
    // Read the log to its end (the process has exited and closed its stderr).
    let rest = server.next_line_with("the rest of the log", |_| false);
    assert_eq!(rest, None);
    assert!(
        !server.log.iter().any(|line| line.contains("answered")),
        "a per-query line at the default level:\n{}",
        server.log.join("\n")
    );
}

#[tokio::test]
async fn serve_reloads_on_sighup() {
    let dir = config_dir(CONFIG);
    let path = dir.path().join(CONFIG_FILE);
    let (mut server, udp) =
        Server::serve(&["--config", path.to_str().unwrap(), "--dns", "127.0.0.1:0"]);
    let london = || Ask::new("www.example.com", RecordType::A).ecs("81.2.69.0/24");
    assert_eq!(
        a_records(&london().udp(udp).await),
        [Ipv4Addr::new(192, 0, 2, 3)]
    );

    std::fs::write(&path, CONFIG.replace("a: [192.0.2.3]", "a: [192.0.2.33]")).unwrap();
    server.guard.signal("HUP");
    server.wait_for("publishing generation 2", |line| {
        line.contains("snapshot published") && line.contains("generation=2")
    });
    assert_eq!(
        a_records(&london().udp(udp).await),
        [Ipv4Addr::new(192, 0, 2, 33)]
    );

    // A bad config on SIGHUP is logged and changes nothing.
    std::fs::write(&path, CONFIG.replace("a: [192.0.2.3]", "a: [not-an-ip]")).unwrap();
    server.guard.signal("HUP");
    server.wait_for("reporting the bad address", |line| {
        line.contains("services.www.pools.eu-west.a[0]")
    });
    assert_eq!(
        a_records(&london().udp(udp).await),
        [Ipv4Addr::new(192, 0, 2, 33)]
    );

    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log.join("\n"));
}

#[tokio::test]
async fn serve_tells_systemd_when_it_is_ready_reloading_and_stopping() {
    let dir = config_dir(CONFIG);
    let path = dir.path().join(CONFIG_FILE);
    // What systemd does for Type=notify: a datagram socket named by $NOTIFY_SOCKET.
    let socket_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&socket_path).unwrap();
    notify.set_read_timeout(Some(STEP)).unwrap();
    let mut server = Server::start_with_env(
        &["--config", path.to_str().unwrap(), "--dns", "127.0.0.1:0"],
        &[("NOTIFY_SOCKET", &socket_path)],
    );
    let udp = server.address("listening for DNS/UDP on ");
    let http = server.address("listening for HTTP on ");

    let ready = notification(&notify);
    assert!(ready.contains(&"READY=1".to_owned()), "{ready:?}");
    // By READY=1 the first snapshot is published and every socket serves.
    let reply = Ask::new("www.example.com", RecordType::A)
        .ecs("81.2.69.0/24")
        .udp(udp)
        .await;
    assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 3)]);
    let readyz = reqwest::get(format!("http://{http}/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 200);

    server.guard.signal("HUP");
    let reloading = notification(&notify);
    assert!(
        reloading.contains(&"RELOADING=1".to_owned()),
        "{reloading:?}"
    );
    let usec = reloading
        .iter()
        .find_map(|line| line.strip_prefix("MONOTONIC_USEC="))
        .and_then(|usec| usec.parse::<u64>().ok());
    assert!(usec.is_some_and(|usec| usec > 0), "{reloading:?}");
    let reloaded = notification(&notify);
    assert!(reloaded.contains(&"READY=1".to_owned()), "{reloaded:?}");

    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log.join("\n"));
    let stopping = notification(&notify);
    assert!(stopping.contains(&"STOPPING=1".to_owned()), "{stopping:?}");
}

/// The next sd_notify(3) message on `socket` (bounded by its read timeout): one
/// `VARIABLE=value` per line.
fn notification(socket: &UnixDatagram) -> Vec<String> {
    let mut buffer = [0u8; 4096];
    let len = socket
        .recv(&mut buffer)
        .expect("a notification within the read timeout");
    String::from_utf8_lossy(&buffer[..len])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn logs_written_to_a_pipe_have_no_colour_codes() {
    // As a pipe, a file or the journal receives them: no terminal, and NO_COLOR not set.
    let dir = config_dir(&CONFIG.replace("policy: nearest", "policy: closest"));
    let path = dir.path().join(CONFIG_FILE);
    let mut command = meridian();
    command.env_remove("NO_COLOR").args([
        "serve",
        "--config",
        path.to_str().unwrap(),
        "--dns",
        "127.0.0.1:0",
    ]);
    let mut guard = Guard::spawn(&mut command);
    let stderr = drain(guard.child.stderr.take().expect("piped stderr"));
    assert_eq!(guard.wait().code(), Some(2));
    let stderr = stderr.join().expect("stderr reader");
    assert!(stderr.contains("ERROR"), "{stderr}");
    assert!(stderr.contains("services.www.policy"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes in {stderr:?}");
}

#[tokio::test]
async fn every_http_request_gets_an_access_log_line() {
    let dir = config_dir(&crate::control::config());
    let path = dir.path().join(CONFIG_FILE);
    let (mut server, _) =
        Server::serve(&["--config", path.to_str().unwrap(), "--dns", "127.0.0.1:0"]);
    let http = server.address("listening for HTTP on ");
    let client = reqwest::Client::new();
    let audit = client
        .get(format!("http://{http}/v1/audit?limit=5"))
        .bearer_auth("example-operator-token")
        .send()
        .await
        .unwrap();
    assert_eq!(audit.status(), 200);
    let missing = client
        .get(format!("http://{http}/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // `http request` at info: method, path (without the query), status, token name, duration.
    let line = server.wait_for("the access line of GET /v1/audit", |line| {
        line.contains("http request") && line.contains("path=\"/v1/audit\"")
    });
    for field in [
        " INFO ",
        "method=GET",
        "status=200",
        "token=\"example-operator\"",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(!line.contains("limit=5"), "{line}");
    let line = server.wait_for("the access line of GET /v1/nope", |line| {
        line.contains("http request") && line.contains("path=\"/v1/nope\"")
    });
    assert!(
        line.contains("status=404") && line.contains("token=\"-\""),
        "{line}"
    );
    // The access log is not the audit log: reading wrote no audit entry.
    let audit: serde_json::Value = audit.json().await.unwrap();
    assert_eq!(audit, serde_json::json!([]));
    assert_eq!(server.terminate().code(), Some(0));
}

#[tokio::test]
async fn a_killed_server_restarts_from_its_stored_state() {
    let dir = config_dir(&crate::control::config());
    let path = dir.path().join(CONFIG_FILE);
    let state_dir = dir.path().join("state");
    let args = [
        "--config",
        path.to_str().unwrap(),
        "--dns",
        "127.0.0.1:0",
        "--state-dir",
        state_dir.to_str().unwrap(),
    ];
    let london = || Ask::new("www.example.com", RecordType::A).ecs("81.2.69.0/24");
    let (mut server, udp) = Server::serve(&args);
    let http = server.address("listening for HTTP on ");
    let client = reqwest::Client::new();
    let response = client
        .put(format!("http://{http}/v1/datacenters/eu-west/report"))
        .bearer_auth("example-eu-west-token")
        .json(
            &serde_json::json!({"healthy": false, "capacity": 100, "load": 0, "ttl_seconds": 3600}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        a_records(&london().udp(udp).await),
        [Ipv4Addr::new(192, 0, 2, 1)]
    );

    // kill -9: no shutdown, no flush beyond what each accepted write already committed.
    server.guard.signal("KILL");
    server.guard.wait();

    let (mut server, udp) = Server::serve(&args);
    let http = server.address("listening for HTTP on ");
    // The very first answer already avoids eu-west.
    assert_eq!(
        a_records(&london().udp(udp).await),
        [Ipv4Addr::new(192, 0, 2, 1)]
    );
    let view: serde_json::Value = client
        .get(format!("http://{http}/v1/datacenters/eu-west"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["healthy"], false, "{view}");
    assert_eq!(view["unverified"], true, "{view}");
    let audit = audit_log(&client, http).await;
    assert_eq!(audit.as_array().map(Vec::len), Some(1), "{audit}");
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn an_empty_state_file_is_refused_unless_the_operator_resets_it() {
    let dir = config_dir(CONFIG);
    let config = dir.path().join(CONFIG_FILE);
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let file = state_dir.join("meridian.redb");
    std::fs::write(&file, b"").unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--dns",
        "127.0.0.1:0",
        "--state-dir",
        state_dir.to_str().unwrap(),
    ];
    let mut server = Server::start(&args);
    let status = server.guard.wait();
    assert_eq!(status.code(), Some(1));
    let refused = server
        .next_line_with("the refusal", |line| line.contains("is empty (0 bytes)"))
        .unwrap_or_else(|| panic!("no refusal in the log:\n{}", server.log.join("\n")));
    assert!(refused.contains("--state-reset"), "{refused}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 0, "left alone");

    // With --state-reset the empty file is kept aside and the server starts afresh.
    let mut reset_args = args.to_vec();
    reset_args.push("--state-reset");
    let (mut server, _) = Server::serve(&reset_args);
    let kept = state_dir.join("meridian.redb.bad");
    assert!(
        server
            .log
            .iter()
            .any(|line| line.contains("--state-reset") && line.contains("meridian.redb.bad")),
        "{}",
        server.log.join("\n")
    );
    assert_eq!(std::fs::metadata(&kept).unwrap().len(), 0);
    assert!(std::fs::metadata(&file).unwrap().len() > 0);
    assert!(server.terminate().success());
}

#[test]
fn state_check_backup_and_restore_work_offline() {
    use meridian::store::{AuditEntry, Change, Store};
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    {
        let store = Store::open(&state_dir).unwrap();
        let entry = AuditEntry {
            unix_ms: 1,
            actor: "test".to_owned(),
            role: "operator".to_owned(),
            action: "drain".to_owned(),
            target: "eu-west".to_owned(),
            detail: serde_json::Value::Null,
        };
        let drain = Change::Drain {
            key: meridian::store::DrainKey {
                datacenter: "eu-west".to_owned(),
                service: None,
            },
            drained: true,
        };
        store.apply(&drain, &entry).unwrap();
    }
    let state = state_dir.to_str().unwrap();
    let checked = run(&["state", "check", "--state-dir", state]);
    assert!(checked.status.success(), "{}", checked.stderr);
    assert!(
        checked.stdout.contains("drains 1") && checked.stdout.contains("audit entries 1"),
        "{}",
        checked.stdout
    );

    let backup = dir.path().join("backup.redb");
    let backed = run(&[
        "state",
        "backup",
        "--state-dir",
        state,
        backup.to_str().unwrap(),
    ]);
    assert!(backed.status.success(), "{}", backed.stderr);
    // A second backup to the same file is refused rather than overwriting it.
    let again = run(&[
        "state",
        "backup",
        "--state-dir",
        state,
        backup.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1), "{}", again.stdout);

    // Restoring over a damaged database keeps the damaged one aside.
    std::fs::write(state_dir.join("meridian.redb"), b"garbage").unwrap();
    let broken = run(&["state", "check", "--state-dir", state]);
    assert_eq!(broken.status.code(), Some(1));
    assert!(broken.stderr.contains("meridian.redb"), "{}", broken.stderr);
    let restored = run(&[
        "state",
        "restore",
        "--state-dir",
        state,
        backup.to_str().unwrap(),
    ]);
    assert!(restored.status.success(), "{}", restored.stderr);
    assert_eq!(
        std::fs::read(state_dir.join("meridian.redb.before-restore")).unwrap(),
        b"garbage"
    );
    let checked = run(&["state", "check", "--state-dir", state]);
    assert!(checked.status.success(), "{}", checked.stderr);
    assert!(checked.stdout.contains("drains 1"), "{}", checked.stdout);
}

/// The audit log of the server whose control plane is at `http`, read as the example operator.
async fn audit_log(client: &reqwest::Client, http: SocketAddr) -> serde_json::Value {
    client
        .get(format!("http://{http}/v1/audit"))
        .bearer_auth("example-operator-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// CPU time (user + system) the process `pid` has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name (field 2) is in parentheses and may hold spaces; count after it.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm")..]
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15; fields[0] is ")" (the end of field 2).
    fields[12].parse::<u64>().unwrap() + fields[13].parse::<u64>().unwrap()
}

#[tokio::test]
async fn out_of_file_descriptors_the_listeners_back_off_log_once_and_recover() {
    let config = CONFIG.replacen(
        "server:\n",
        "server:\n  tcp: { max_connections: 1000, max_connections_per_client: 1000 }\n",
        1,
    ) + "control:
  max_connections: 1000
  header_read_timeout_seconds: 60
  address_rate_limit: { per_second: 1000, burst: 1000 }
";
    let dir = config_dir(&config);
    let path = dir.path().join(CONFIG_FILE);
    // A descriptor limit of 64: the server starts with about 20 open, so a few dozen
    // connections exhaust it.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .args(["--dns", "127.0.0.1:0", "--control", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut server = Server::spawn(&mut command);
    let tcp = server.address("listening for DNS/TCP on ");
    let http = server.address("listening for HTTP on ");
    let pid = server.guard.child.id();

    let mut held = Vec::new();
    for _ in 0..80 {
        held.extend(std::net::TcpStream::connect(http).ok());
        held.extend(std::net::TcpStream::connect(tcp).ok());
    }
    // Past the first failures and their short pauses.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(pid) - before;
    // Spinning on EMFILE burns the whole 2 s (200 ticks at 100 Hz); backing off, almost none.
    assert!(
        used < 40,
        "{used} ticks of CPU in 2 s with every descriptor in use"
    );

    let mut failures: Vec<String> = Vec::new();
    while let Ok(line) = server.lines.try_recv() {
        if line.contains("accepting connections fails") {
            failures.push(line);
        }
    }
    for listener in ["http", "dns-tcp"] {
        let lines: Vec<&String> = failures
            .iter()
            .filter(|line| line.contains(&format!("listener=\"{listener}\"")))
            .collect();
        assert_eq!(lines.len(), 1, "{listener}: {failures:#?}");
        assert!(lines[0].contains("Too many open files"), "{}", lines[0]);
    }

    // Descriptors free again: both listeners serve (after at most one backoff of a second).
    drop(held);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reply = Ask::new("www.example.com", RecordType::A).tcp(tcp).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let metrics = reqwest::Client::new()
        .get(format!("http://{http}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("the control plane serves again")
        .text()
        .await
        .unwrap();
    for listener in ["http", "dns-tcp"] {
        assert!(
            metrics.contains(&format!(
                "meridian_accept_errors_total{{listener=\"{listener}\"}}"
            )),
            "{metrics}"
        );
    }
    assert!(server.terminate().success());
}

#[tokio::test]
async fn the_log_filter_changes_at_runtime_is_audited_and_reverts() {
    let dir = config_dir(&crate::control::config());
    let path = dir.path().join(CONFIG_FILE);
    let (mut server, _) =
        Server::serve(&["--config", path.to_str().unwrap(), "--dns", "127.0.0.1:0"]);
    let http = server.address("listening for HTTP on ");
    let client = reqwest::Client::new();
    let put = |body: serde_json::Value, token: &'static str| {
        client
            .put(format!("http://{http}/v1/log"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    // Only operators; a filter that does not parse is a 400 and changes nothing.
    let refused = put(
        serde_json::json!({"filter": "debug"}),
        "example-eu-west-token",
    );
    assert_eq!(refused.await.unwrap().status(), 403);
    let bad = put(
        serde_json::json!({"filter": "meridian=loud"}),
        "example-operator-token",
    );
    assert_eq!(bad.await.unwrap().status(), 400);
    let long = serde_json::json!({"filter": "info", "revert_after_seconds": 86_401});
    assert_eq!(
        put(long, "example-operator-token").await.unwrap().status(),
        400
    );

    // Silence the access log for two seconds.
    let quiet =
        serde_json::json!({"filter": "info,meridian::access=warn", "revert_after_seconds": 2});
    let changed = put(quiet, "example-operator-token").await.unwrap();
    assert_eq!(changed.status(), 200);
    let view: serde_json::Value = changed.json().await.unwrap();
    assert_eq!(view["revert_after_seconds"], 2, "{view}");
    server.wait_for("the change", |line| line.contains("log filter changed"));
    let silent = client.get(format!("http://{http}/v1/silent")).send().await;
    assert_eq!(silent.unwrap().status(), 404);
    server.wait_for("the revert", |line| line.contains("log filter reverted"));
    let heard = client.get(format!("http://{http}/v1/heard")).send().await;
    assert_eq!(heard.unwrap().status(), 404);
    // The first access line after the change is the request made after the revert.
    let line = server.wait_for("an access line", |line| {
        line.contains("http request") && !line.contains("path=\"/v1/log\"")
    });
    assert!(line.contains("path=\"/v1/heard\""), "{line}");
    assert!(!server.log.iter().any(|l| l.contains("/v1/silent")));

    // The accepted change is in the audit log, the refused ones are not.
    let audit = audit_log(&client, http).await;
    let entries = audit.as_array().expect("a list");
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["action"], "log");
    assert_eq!(entries[0]["detail"]["filter"], "info,meridian::access=warn");
    assert_eq!(server.terminate().code(), Some(0));
}
