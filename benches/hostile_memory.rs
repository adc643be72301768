//! Memory under hostile input (issue 10 §6): the real `meridian serve` (the shipped example,
//! with response rate limiting on) takes a long run of mutated and malformed datagrams from many
//! sources, and its resident memory is read from `/proc` as the run goes, then after a rest.
//!
//! Run with `cargo bench --bench hostile_memory` (a release build). Settings, from the
//! environment: `DATAGRAMS` (default 1,000,000), `SOURCES` (source addresses, each its own
//! /24 under 127.0.0.0/8, default 1024), `RATE` (datagrams a second at most, default 100,000),
//! `RRL` (`0` turns rate limiting off), `SERVER_EXTRA` (a line added under `server:`, e.g.
//! `traffic: { sample_one_in: 0 }`), `MERIDIAN_BIN` (another binary to measure).
//!
//! What is sent, from a fixed-seed generator: queries for random names in and out of the zone
//! with random types (half of them routed, with a random ECS network), then mutated (bytes
//! flipped, cut short, trailing garbage, counts changed), plus pure random bytes and responses.
//! The table shows, every tenth of the run, the datagrams sent, the replies received and the
//! server's RSS; the last line is after the run and two seconds of rest.
//! It prints to standard error, as the other benchmarks do.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A small fixed-seed generator (xorshift64*): the same run on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A query for a random name and type: in the zone (static, routed, missing) or outside it,
/// with EDNS and sometimes ECS.
fn query(rng: &mut Rng, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&(rng.next() as u16).to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    let name: Vec<Vec<u8>> = match rng.below(4) {
        0 => vec![b"www".to_vec(), b"example".to_vec(), b"com".to_vec()],
        1 => vec![
            format!("n{}", rng.below(1_000_000)).into_bytes(),
            b"example".to_vec(),
            b"com".to_vec(),
        ],
        2 => vec![
            format!("u{}", rng.below(1_000_000)).into_bytes(),
            b"users".to_vec(),
            b"example".to_vec(),
            b"com".to_vec(),
        ],
        _ => vec![
            format!("x{}", rng.below(1_000_000)).into_bytes(),
            b"org".to_vec(),
        ],
    };
    for label in &name {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    let qtype: u16 = [1, 28, 16, 15, 6, 2, 255, 0, 252, 33][rng.below(10) as usize];
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    // OPT, with an ECS option for a random /24 half of the time.
    out.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    if rng.below(2) == 0 {
        let net = (rng.next() as u32).to_be_bytes();
        out.extend_from_slice(&[0, 11, 0, 8, 0, 7, 0, 1, 24, 0, net[0], net[1], net[2]]);
    } else {
        out.extend_from_slice(&[0, 0]);
    }
}

/// One hostile datagram.
fn datagram(rng: &mut Rng, out: &mut Vec<u8>) {
    match rng.below(16) {
        // Pure garbage of any length up to a large datagram.
        0 => {
            out.clear();
            let len = rng.below(1500) as usize;
            out.extend((0..len).map(|_| rng.byte()));
        }
        // A response: must be ignored.
        1 => {
            query(rng, out);
            out[2] |= 0x80;
        }
        // A query as it is.
        2..=5 => query(rng, out),
        // A mutated query: bytes flipped, cut short, garbage appended, counts changed.
        _ => {
            query(rng, out);
            for _ in 0..=rng.below(4) {
                match rng.below(4) {
                    0 => {
                        let at = rng.below(out.len() as u64) as usize;
                        out[at] ^= rng.byte() | 1;
                    }
                    1 => {
                        let len = rng.below(out.len() as u64) as usize;
                        out.truncate(len.max(12));
                    }
                    2 => {
                        let extra = rng.below(64) as usize;
                        out.extend((0..extra).map(|_| rng.byte()));
                    }
                    _ => {
                        let at = 4 + 2 * rng.below(4) as usize;
                        if out.len() > at + 1 {
                            out[at + 1] = rng.byte();
                        }
                    }
                }
            }
        }
    }
}

/// The server's resident set in KiB (VmRSS).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// A loopback port free for both UDP and TCP.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("address").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let datagrams = env_or("DATAGRAMS", 1_000_000);
    let n_sources = env_or("SOURCES", 1024).clamp(1, 60_000);
    let rate = env_or("RATE", 100_000).max(1);
    let rrl = env_or("RRL", 1) != 0;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("a directory");
    let example = std::fs::read_to_string(root.join("zones/example.yaml")).expect("the example");
    let mut config = example
        .replace(
            "../geodata/",
            &format!("{}/", root.join("geodata").display()),
        )
        .replace(
            "file: example.com.zone",
            &format!("file: {}", root.join("zones/example.com.zone").display()),
        );
    if rrl {
        config = config.replacen(
            "server:\n",
            "server:\n  rrl: { responses_per_second: 50, slip: 2 }\n",
            1,
        );
    }
    // More `server:` settings, e.g. `traffic: { sample_one_in: 0 }`, to find what holds memory.
    if let Ok(extra) = std::env::var("SERVER_EXTRA") {
        config = config.replacen("server:\n", &format!("server:\n  {extra}\n"), 1);
    }
    let config_path = dir.path().join("hostile.yaml");
    std::fs::write(&config_path, config).expect("write the configuration");
    let port = free_port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let binary =
        std::env::var("MERIDIAN_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_meridian").to_owned());
    let server = Server(
        Command::new(&binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--dns")
            .arg(addr.to_string())
            .arg("--control")
            .arg(format!("127.0.0.1:{}", free_port()))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start meridian"),
    );
    let pid = server.0.id();

    // Many sources, each in its own /24 of 127.0.0.0/8, so every one has its own RRL buckets.
    let sources: Vec<UdpSocket> = (0..n_sources)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 1 + (i / 256) as u8, (i % 256) as u8, 1);
            let socket = UdpSocket::bind((ip, 0)).expect("bind a source (127.0.0.0/8 is local)");
            socket.set_nonblocking(true).expect("non-blocking");
            socket.connect(addr).expect("connect");
            socket
        })
        .collect();

    // Ready when a plain query is answered.
    let mut probe = Vec::new();
    let mut rng = Rng(0x5eed_2026_1129);
    let started = Instant::now();
    let mut buf = [0u8; 65_536];
    loop {
        query(&mut rng, &mut probe);
        let _ = sources[0].send(&probe);
        std::thread::sleep(Duration::from_millis(50));
        if sources[0].recv(&mut buf).is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "meridian did not answer within 30 s"
        );
    }
    let idle = rss_kib(pid);
    eprintln!(
        "meridian {binary}, RRL {}",
        if rrl { "on (50/s, slip 2)" } else { "off" }
    );
    eprintln!("{datagrams} datagrams from {n_sources} sources, at most {rate}/s");
    eprintln!(
        "{:>10} {:>10} {:>8} {:>9}",
        "sent", "replies", "seconds", "RSS MiB"
    );
    let row = |sent: u64, replies: u64, rss: u64| {
        eprintln!(
            "{sent:>10} {replies:>10} {:>8.1} {:>9.1}",
            started.elapsed().as_secs_f64(),
            rss as f64 / 1024.0
        );
    };
    row(0, 0, idle);
    let started = Instant::now();
    let (mut sent, mut replies, mut peak) = (0u64, 0u64, idle);
    let mut samples = Vec::new();
    let mut packet = Vec::with_capacity(2048);
    const BURST: u64 = 100;
    while sent < datagrams {
        for _ in 0..BURST.min(datagrams - sent) {
            datagram(&mut rng, &mut packet);
            let source = &sources[rng.below(n_sources) as usize];
            match source.send(&packet) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // Refused: an ICMP error from an earlier datagram; nothing to do.
                Err(_) => {}
            }
            sent += 1;
        }
        for source in &sources[..sources.len().min(64)] {
            while source.recv(&mut buf).is_ok() {
                replies += 1;
            }
        }
        // Pace to `rate`, and drain every source now and then.
        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        if sent % (datagrams / 10).max(BURST) < BURST {
            for source in &sources {
                while source.recv(&mut buf).is_ok() {
                    replies += 1;
                }
            }
            let rss = rss_kib(pid);
            peak = peak.max(rss);
            samples.push(rss);
            row(sent, replies, rss);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    for source in &sources {
        while source.recv(&mut buf).is_ok() {
            replies += 1;
        }
    }
    let rested = rss_kib(pid);
    row(sent, replies, rested);
    let half = samples.get(samples.len() / 2).copied().unwrap_or(idle);
    eprintln!(
        "RSS MiB: idle {:.1}, at half the run {:.1}, peak {:.1}, after the run and 2 s of rest {:.1}",
        idle as f64 / 1024.0,
        half as f64 / 1024.0,
        peak as f64 / 1024.0,
        rested as f64 / 1024.0
    );
    drop(server);
}
