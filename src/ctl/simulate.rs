//! `meridian ctl simulate`: hypothetical changes sent to `POST /v1/simulate`, and the answer
//! (also what `meridian simulate` prints offline) as a readable report: per service, each
//! datacenter's share now and after, the queries that move, the datacenters past their
//! watermarks and the clients that would fail open; then every datacenter's projected load.
//!
//! Like the rest of `ctl`, it reads the server's JSON and knows none of its types.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Value, json};

use super::{Call, Client, CtlError};

/// The changes to simulate; at least one.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Drain this datacenter (repeatable).
    #[arg(long, value_name = "DC")]
    pub drain: Vec<String>,
    /// Report this datacenter down (repeatable).
    #[arg(long, value_name = "DC")]
    pub down: Vec<String>,
    /// Report this datacenter healthy (repeatable).
    #[arg(long, value_name = "DC")]
    pub up: Vec<String>,
    /// Report a datacenter at this load, e.g. `eu-west=900` (repeatable).
    #[arg(long, value_name = "DC=LOAD")]
    pub load: Vec<String>,
    /// Report a datacenter at this capacity, e.g. `eu-west=1000` (repeatable).
    #[arg(long, value_name = "DC=CAPACITY")]
    pub capacity: Vec<String>,
    /// Give a service another policy, e.g. `api=nearest` (repeatable).
    #[arg(long, value_name = "SERVICE=POLICY")]
    pub policy: Vec<String>,
    /// Keep only these pools of a service, e.g. `www=us-east,us-west` (repeatable).
    #[arg(long, value_name = "SERVICE=DC,DC")]
    pub pools: Vec<String>,
    /// A whole candidate configuration (YAML), judged against the running one.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The request for `args`.
pub(super) fn call(args: &SimulateArgs) -> Result<Call, CtlError> {
    let mut changes = Vec::new();
    if let Some(path) = &args.config {
        changes.push(json!({ "config": read_text(path)? }));
    }
    for (service, policy) in pairs(&args.policy, "--policy")? {
        changes.push(json!({ "service": service, "policy": policy }));
    }
    for (service, pools) in pairs(&args.pools, "--pools")? {
        let pools: Vec<&str> = pools.split(',').map(str::trim).collect();
        changes.push(json!({ "service": service, "pools": pools }));
    }
    for dc in &args.drain {
        changes.push(json!({ "datacenter": dc, "drained": true }));
    }
    for (list, healthy) in [(&args.down, false), (&args.up, true)] {
        for dc in list {
            changes.push(json!({ "datacenter": dc, "healthy": healthy }));
        }
    }
    for (list, flag, field) in [
        (&args.load, "--load", "load"),
        (&args.capacity, "--capacity", "capacity"),
    ] {
        for (dc, value) in pairs(list, flag)? {
            let number: f64 = value
                .parse()
                .map_err(|_| CtlError::Usage(format!("{flag} {dc}={value}: not a number")))?;
            changes.push(json!({ "datacenter": dc, field: number }));
        }
    }
    if changes.is_empty() {
        return Err(CtlError::Usage(
            "say what to simulate: --drain, --down, --up, --load, --capacity, --policy, --pools or --config"
                .to_owned(),
        ));
    }
    Ok(Call::post(
        "/v1/simulate",
        Some(json!({ "changes": changes })),
    ))
}

/// The recorded traffic of the server at `server` (`GET /v1/traffic`), for `meridian simulate`.
///
/// # Errors
///
/// The server cannot be reached or refuses (a missing or wrong operator token).
pub fn fetch_traffic(server: &str, token_file: Option<&Path>) -> Result<Vec<u8>, CtlError> {
    let token = super::token_from(token_file)?;
    let client = Client {
        server: server.trim_end_matches('/').to_owned(),
        token,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Usage(format!("cannot start the async runtime: {e}")))?;
    let (_, body) = runtime.block_on(client.send(&Call::get("/v1/traffic")))?;
    Ok(body.to_string().into_bytes())
}

/// A simulation's answer as text: with `json`, the JSON as is, pretty.
pub fn render_text(text: &str, json: bool) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(value) if !json => render(&value),
        Ok(value) => super::render(&value, true),
        Err(_) => text.to_owned(),
    }
}

/// A simulation's answer (`POST /v1/simulate`) as a report.
pub(super) fn render(value: &Value) -> String {
    let mut res = String::new();
    let _ = writeln!(
        res,
        "replayed {} sampled queries (one in {} recorded, last {} s)",
        value["sampled_queries"], value["sample_one_in"], value["window_seconds"]
    );
    for service in value["services"].as_array().into_iter().flatten() {
        let _ = writeln!(
            res,
            "\nservice {} ({} sampled queries)",
            text(&service["service"]),
            service["queries"]
        );
        let _ = writeln!(res, "  {:<12} {:>16} {:>16}", "datacenter", "now", "after");
        for share in service["shares"].as_array().into_iter().flatten() {
            let _ = writeln!(
                res,
                "  {:<12} {:>16} {:>16}",
                text(&share["datacenter"]),
                format!(
                    "{} ({})",
                    share["queries_now"],
                    percent(&share["share_now"])
                ),
                format!(
                    "{} ({})",
                    share["queries_after"],
                    percent(&share["share_after"])
                ),
            );
        }
        let moves = service["moves"].as_array().map_or(&[][..], Vec::as_slice);
        if moves.is_empty() {
            let _ = writeln!(res, "  no query moves");
        }
        for one in moves {
            let networks: Vec<String> = one["networks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            let _ = writeln!(
                res,
                "  moves: {} -> {}: {} queries ({})",
                or_none(&one["from"]),
                or_none(&one["to"]),
                one["queries"],
                networks.join(", ")
            );
        }
        for mark in service["watermarks"].as_array().into_iter().flatten() {
            let _ = writeln!(
                res,
                "  past {} watermark: {} at {} of capacity (now {}; low {}, high {}){}",
                text(&mark["past"]),
                text(&mark["datacenter"]),
                percent(&mark["utilization_after"]),
                percent(&mark["utilization_now"]),
                percent(&mark["low"]),
                percent(&mark["high"]),
                if mark["newly"] == true {
                    ""
                } else {
                    ", already"
                }
            );
        }
        if service["failed_open"].as_u64().unwrap_or(0) > 0 {
            let networks: Vec<String> = service["failed_open_networks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            let _ = writeln!(
                res,
                "  would fail open: {} queries ({})",
                service["failed_open"],
                networks.join(", ")
            );
        }
    }
    let _ = writeln!(
        res,
        "\n  {:<12} {:>8} {:>8} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "datacenter", "queries", "after", "load", "after", "capacity", "util", "after"
    );
    for dc in value["datacenters"].as_array().into_iter().flatten() {
        let _ = writeln!(
            res,
            "  {:<12} {:>8} {:>8} {:>10} {:>10} {:>10} {:>8} {:>8}",
            text(&dc["datacenter"]),
            text(&dc["queries_now"]),
            text(&dc["queries_after"]),
            number(&dc["load_now"]),
            number(&dc["load_after"]),
            number(&dc["capacity"]),
            percent(&dc["utilization_now"]),
            percent(&dc["utilization_after"]),
        );
    }
    res
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

fn or_none(value: &Value) -> String {
    if value.is_null() {
        "no answer".to_owned()
    } else {
        text(value)
    }
}

fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |v| format!("{:.1} %", v * 100.0))
}

fn number(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// `NAME=VALUE` arguments of `flag`, split.
fn pairs<'a>(list: &'a [String], flag: &str) -> Result<Vec<(&'a str, &'a str)>, CtlError> {
    list.iter()
        .map(|item| {
            item.split_once('=')
                .ok_or_else(|| CtlError::Usage(format!("{flag} {item}: expected NAME=VALUE")))
        })
        .collect()
}

fn read_text(path: &Path) -> Result<String, CtlError> {
    std::fs::read_to_string(path)
        .map_err(|e| CtlError::Usage(format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_changes() {
        let args = SimulateArgs {
            drain: vec!["eu-west".into()],
            down: vec!["us-east".into()],
            up: vec![],
            load: vec!["us-west=900".into()],
            capacity: vec![],
            policy: vec!["api=nearest".into()],
            pools: vec!["www=us-east,us-west".into()],
            config: None,
        };
        let call = call(&args).expect("a call");
        assert_eq!(call.path, "/v1/simulate");
        assert_eq!(
            call.body.expect("a body")["changes"],
            json!([
                {"service": "api", "policy": "nearest"},
                {"service": "www", "pools": ["us-east", "us-west"]},
                {"datacenter": "eu-west", "drained": true},
                {"datacenter": "us-east", "healthy": false},
                {"datacenter": "us-west", "load": 900.0},
            ])
        );
        let bad = SimulateArgs {
            load: vec!["us-west".into()],
            ..args
        };
        assert!(matches!(call_err(&bad), CtlError::Usage(m) if m.contains("NAME=VALUE")));
    }

    fn call_err(args: &SimulateArgs) -> CtlError {
        match call(args) {
            Ok(_) => panic!("expected a usage error"),
            Err(error) => error,
        }
    }

    #[test]
    fn the_report_names_moves_and_watermarks() {
        let value = json!({
            "sample_one_in": 1, "window_seconds": 600, "sampled_queries": 4,
            "services": [{
                "service": "www", "queries": 4,
                "shares": [
                    {"datacenter": "eu-west", "queries_now": 2, "queries_after": 0, "share_now": 0.5, "share_after": 0.0},
                    {"datacenter": "us-east", "queries_now": 2, "queries_after": 4, "share_now": 0.5, "share_after": 1.0}
                ],
                "moves": [{"from": "eu-west", "to": "us-east", "queries": 2, "networks": ["81.2.69.0/24"]}],
                "watermarks": [{"datacenter": "us-east", "past": "high", "newly": true, "utilization_now": 0.5, "utilization_after": 1.0, "low": 0.8, "high": 0.95}],
                "failed_open": 0, "failed_open_networks": [], "failed_open_now": 0
            }],
            "datacenters": []
        });
        let report = render(&value);
        assert!(
            report.contains("moves: eu-west -> us-east: 2 queries (81.2.69.0/24)"),
            "{report}"
        );
        assert!(
            report.contains("past high watermark: us-east at 100.0 % of capacity"),
            "{report}"
        );
        assert!(report.contains("4 (100.0 %)"), "{report}");
    }
}
