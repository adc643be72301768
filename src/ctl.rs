//! `meridian ctl`: a command-line client of the control plane, as `knotc` or `gdnsdctl` are.
//!
//! Each subcommand is one HTTP request (two for `status`) to a running server's control plane,
//! with the bearer token from `MERIDIAN_TOKEN` or `--token-file`.
//! The answer is printed as a human table by default, or as the server's JSON with `--json`.
//!
//! It deliberately knows nothing of the server's types: it reads the JSON the server sends, so
//! it imports no other module of this crate and a field added to a view shows up without a
//! change here.
//! It speaks plain HTTP/1.1 only (the control plane does not serve TLS; put it behind a proxy
//! that does when it crosses a network you do not trust).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use serde_json::Value;

mod simulate;

pub use simulate::{SimulateArgs, fetch_traffic, render_text};

/// The environment variable holding the bearer token.
pub const TOKEN_ENV: &str = "MERIDIAN_TOKEN";
/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The widest cell printed in a table; longer values are cut with `…` (`--json` has them whole).
const MAX_CELL: usize = 48;

/// `meridian ctl ...`: where the server is, how to authenticate, and what to ask.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The control plane's base URL, e.g. `http://127.0.0.1:8053`.
    #[arg(long, default_value = "http://127.0.0.1:8053")]
    pub server: String,
    /// A file holding the bearer token (its first line); without it, `MERIDIAN_TOKEN`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// What to ask.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The requests `meridian ctl` makes.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Readiness and every datacenter's state.
    Status,
    /// Every datacenter's state, or one datacenter's.
    Datacenters {
        /// Only this datacenter.
        name: Option<String>,
    },
    /// Drain a datacenter (for every service, or one), or with `--instance` this whole server.
    Drain(DrainArgs),
    /// Lift a datacenter's drain, or with `--instance` this server's.
    Undrain(DrainArgs),
    /// Send a health and load report for a datacenter.
    Report {
        /// The datacenter.
        datacenter: String,
        /// Report it unhealthy (default healthy).
        #[arg(long)]
        unhealthy: bool,
        /// Capacity, in the datacenter's own units.
        #[arg(long)]
        capacity: f64,
        /// Current load, in the same units.
        #[arg(long)]
        load: f64,
        /// How long the report stays fresh.
        #[arg(long)]
        ttl_seconds: Option<u32>,
    },
    /// Explain what DNS answers for a name, and why.
    Explain {
        /// The name asked.
        name: String,
        /// The record type (default A).
        #[arg(long = "type")]
        qtype: Option<String>,
        /// The resolver's address.
        #[arg(long)]
        client: Option<String>,
        /// The EDNS Client Subnet, e.g. `81.2.69.0/24`.
        #[arg(long)]
        ecs: Option<String>,
    },
    /// Reload configuration, zones and geo database.
    Reload,
    /// The running configuration, its versions, and diffs between them.
    Config {
        /// What to show.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// The user directory: look up, pin and unpin users, and its summary.
    Users {
        /// What to do.
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Change the log filter for a while (then the start-up filter comes back).
    Log {
        /// A tracing filter, e.g. `info,meridian::routing=debug`.
        filter: String,
        /// Seconds until it reverts (default 600, at most 86400).
        #[arg(long)]
        revert_after_seconds: Option<u64>,
    },
    /// The query log's rate and counts; with `--sample`, change the rate for a while (then the
    /// configured rate comes back).
    #[command(name = "querylog")]
    QueryLog {
        /// The share of queries to log, 0 (off) to 1 (every query).
        #[arg(long)]
        sample: Option<f64>,
        /// Seconds until it reverts (default 600, at most 86400).
        #[arg(long, requires = "sample")]
        revert_after_seconds: Option<u64>,
    },
    /// The most recent internal errors (panics, store failures, other 500s).
    Errors,
    /// Banned-query rules; with `add ...` or `remove ID`, change them.
    Banned {
        /// What to do (default: list them with their match counts).
        #[command(subcommand)]
        action: Option<BannedAction>,
    },
    /// What would happen: the recorded traffic replayed under hypothetical changes (nothing
    /// is changed).
    Simulate(SimulateArgs),
    /// The feature toggles; with `on NAME` or `off NAME`, switch one.
    Toggles {
        /// What to do (default: list them).
        #[command(subcommand)]
        action: Option<TogglesAction>,
    },
    /// The audit log.
    Audit {
        /// Entries after this sequence number.
        #[arg(long)]
        after: Option<u64>,
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// The arguments of `drain` and `undrain`.
#[derive(Debug, Args)]
#[group(id = "what", required = true, args = ["datacenter", "instance"])]
pub struct DrainArgs {
    /// The datacenter.
    pub datacenter: Option<String>,
    /// This whole server instead (`/readyz` fails, so a load balancer takes it out).
    #[arg(long)]
    pub instance: bool,
    /// Only this service.
    #[arg(long, conflicts_with = "instance")]
    pub service: Option<String>,
    /// Drain even when a service would be left with no eligible datacenter.
    #[arg(long, conflicts_with = "instance")]
    pub force: bool,
}

/// `meridian ctl config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// The configuration now serving.
    Show,
    /// Every configuration version this server has run.
    Versions,
    /// A unified diff between two versions (the newer default the running one).
    Diff {
        /// The older version.
        from: String,
        /// The newer version.
        to: Option<String>,
    },
}

/// `meridian ctl banned ...`.
#[derive(Debug, Subcommand)]
pub enum BannedAction {
    /// Ban queries matching every part given: drop them or answer REFUSED.
    Add {
        /// The exact query name.
        #[arg(long)]
        name: Option<String>,
        /// A name suffix: the name and every name below it.
        #[arg(long)]
        suffix: Option<String>,
        /// The query type, e.g. `ANY`.
        #[arg(long)]
        qtype: Option<String>,
        /// Octets (hexadecimal) the message holds at `--offset`.
        #[arg(long)]
        hex: Option<String>,
        /// Where `--hex` starts in the message (default 0).
        #[arg(long, requires = "hex")]
        offset: Option<u16>,
        /// `drop` or `refuse` (default `refuse`).
        #[arg(long)]
        action: Option<String>,
    },
    /// Remove a rule.
    Remove {
        /// The rule's id (as `banned` lists it).
        id: String,
    },
}

/// `meridian ctl toggles ...`.
#[derive(Debug, Subcommand)]
pub enum TogglesAction {
    /// Switch a toggle on.
    On {
        /// The toggle, e.g. `capacity_spill`.
        name: String,
    },
    /// Switch a toggle off.
    Off {
        /// The toggle, e.g. `capacity_spill`.
        name: String,
    },
}

/// `meridian ctl users ...`.
#[derive(Debug, Subcommand)]
pub enum UsersAction {
    /// Where a user is served.
    Get {
        /// The user's id.
        id: String,
    },
    /// Pin a user to a home and replica datacenter.
    Pin {
        /// The user's id.
        id: String,
        /// The home datacenter.
        #[arg(long)]
        home: String,
        /// The replica datacenter.
        #[arg(long)]
        replica: String,
    },
    /// Remove a user's pin.
    Unpin {
        /// The user's id.
        id: String,
    },
    /// The directory's summary.
    Summary,
}

/// Runs `meridian ctl`: 0 when every request succeeded, 1 otherwise (the server's error, or why
/// the server could not be asked, on stderr).
pub fn run(args: CtlArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(&args)) {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not a failure of the request.
            let _ = stdout.write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// What can go wrong asking the server.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The arguments cannot make a request.
    #[error("{0}")]
    Usage(String),
    /// No answer: connection refused, timeout, bad URL.
    #[error("cannot reach {server}: {reason}")]
    Unreachable {
        /// The base URL.
        server: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{status}: {message}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The server's `error` message, or its body.
        message: String,
    },
}

/// One request: method, path with query, and an optional JSON body.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
}

impl Call {
    fn get(path: impl Into<String>) -> Call {
        Call {
            method: Method::GET,
            path: path.into(),
            body: None,
        }
    }

    fn post(path: impl Into<String>, body: Option<Value>) -> Call {
        Call {
            method: Method::POST,
            path: path.into(),
            body,
        }
    }
}

/// Makes the requests for `args` and renders the answer.
async fn execute(args: &CtlArgs) -> Result<String, CtlError> {
    let token = token(args)?;
    let client = Client {
        server: args.server.trim_end_matches('/').to_owned(),
        token,
    };
    if let CtlCommand::Simulate(simulate) = &args.command {
        let (_, body) = client.send(&simulate::call(simulate)?).await?;
        return Ok(if args.json {
            render(&body, true)
        } else {
            simulate::render(&body)
        });
    }
    let Some(call) = call_for(&args.command) else {
        return status(&client, args.json).await;
    };
    let (_, body) = client.send(&call).await?;
    Ok(render(&body, args.json))
}

/// The one request a subcommand makes; `None` for `status`, which makes two.
fn call_for(command: &CtlCommand) -> Option<Call> {
    Some(match command {
        CtlCommand::Status | CtlCommand::Simulate(_) => return None,
        CtlCommand::Datacenters { name: None } => Call::get("/v1/datacenters"),
        CtlCommand::Datacenters { name: Some(name) } => {
            Call::get(format!("/v1/datacenters/{}", segment(name)))
        }
        CtlCommand::Drain(drain) => drain_call(drain, "drain"),
        CtlCommand::Undrain(drain) => drain_call(drain, "undrain"),
        CtlCommand::Report {
            datacenter,
            unhealthy,
            capacity,
            load,
            ttl_seconds,
        } => {
            let mut body = serde_json::json!({
                "healthy": !unhealthy, "capacity": capacity, "load": load,
            });
            if let Some(ttl) = ttl_seconds {
                body["ttl_seconds"] = Value::from(*ttl);
            }
            Call {
                method: Method::PUT,
                path: format!("/v1/datacenters/{}/report", segment(datacenter)),
                body: Some(body),
            }
        }
        CtlCommand::Explain {
            name,
            qtype,
            client,
            ecs,
        } => {
            let params = [
                ("name", Some(name)),
                ("type", qtype.as_ref()),
                ("client", client.as_ref()),
                ("ecs", ecs.as_ref()),
            ];
            Call::get(format!("/v1/explain?{}", query(&params)))
        }
        CtlCommand::Reload => Call::post("/v1/reload", None),
        CtlCommand::Errors => Call::get("/v1/errors"),
        CtlCommand::Banned { action: None } => Call::get("/v1/banned"),
        CtlCommand::Banned {
            action: Some(BannedAction::Remove { id }),
        } => Call {
            method: Method::DELETE,
            path: format!("/v1/banned/{}", segment(id)),
            body: None,
        },
        CtlCommand::Banned {
            action:
                Some(BannedAction::Add {
                    name,
                    suffix,
                    qtype,
                    hex,
                    offset,
                    action,
                }),
        } => {
            let mut body = serde_json::json!({});
            for (key, value) in [
                ("name", name),
                ("suffix", suffix),
                ("qtype", qtype),
                ("action", action),
            ] {
                if let Some(value) = value {
                    body[key] = Value::from(value.as_str());
                }
            }
            if let Some(hex) = hex {
                body["bytes"] = serde_json::json!({"offset": offset.unwrap_or(0), "hex": hex});
            }
            Call::post("/v1/banned", Some(body))
        }
        CtlCommand::Toggles { action: None } => Call::get("/v1/toggles"),
        CtlCommand::Toggles {
            action: Some(action),
        } => {
            let (name, on) = match action {
                TogglesAction::On { name } => (name, true),
                TogglesAction::Off { name } => (name, false),
            };
            Call {
                method: Method::PUT,
                path: format!("/v1/toggles/{}", segment(name)),
                body: Some(serde_json::json!({ "on": on })),
            }
        }
        CtlCommand::Config { action } => match action {
            ConfigAction::Show => Call::get("/v1/config"),
            ConfigAction::Versions => Call::get("/v1/config/versions"),
            ConfigAction::Diff { from, to } => Call::get(format!(
                "/v1/config/diff?{}",
                query(&[("from", Some(from)), ("to", to.as_ref())])
            )),
        },
        CtlCommand::Users { action } => match action {
            UsersAction::Get { id } => Call::get(format!("/v1/users/{}", segment(id))),
            UsersAction::Pin { id, home, replica } => Call {
                method: Method::PUT,
                path: format!("/v1/users/{}/pin", segment(id)),
                body: Some(serde_json::json!({"home": home, "replica": replica})),
            },
            UsersAction::Unpin { id } => Call {
                method: Method::DELETE,
                path: format!("/v1/users/{}/pin", segment(id)),
                body: None,
            },
            UsersAction::Summary => Call::get("/v1/directory"),
        },
        CtlCommand::Log {
            filter,
            revert_after_seconds,
        } => {
            let mut body = serde_json::json!({"filter": filter});
            if let Some(seconds) = revert_after_seconds {
                body["revert_after_seconds"] = Value::from(*seconds);
            }
            Call {
                method: Method::PUT,
                path: "/v1/log".to_owned(),
                body: Some(body),
            }
        }
        CtlCommand::QueryLog {
            sample: None,
            revert_after_seconds: _,
        } => Call::get("/v1/querylog"),
        CtlCommand::QueryLog {
            sample: Some(sample),
            revert_after_seconds,
        } => {
            let mut body = serde_json::json!({"sample": sample});
            if let Some(seconds) = revert_after_seconds {
                body["revert_after_seconds"] = Value::from(*seconds);
            }
            Call {
                method: Method::PUT,
                path: "/v1/querylog".to_owned(),
                body: Some(body),
            }
        }
        CtlCommand::Audit { after, limit } => {
            let after = after.map(|n| n.to_string());
            let limit = limit.map(|n| n.to_string());
            Call::get(format!(
                "/v1/audit?{}",
                query(&[("after", after.as_ref()), ("limit", limit.as_ref())])
            ))
        }
    })
}

fn drain_call(drain: &DrainArgs, action: &str) -> Call {
    match &drain.datacenter {
        Some(dc) if !drain.instance => {
            let mut body = serde_json::json!({"force": drain.force});
            if let Some(service) = &drain.service {
                body["service"] = Value::from(service.as_str());
            }
            Call::post(
                format!("/v1/datacenters/{}/{action}", segment(dc)),
                Some(body),
            )
        }
        // clap's group makes this exactly one of the two.
        _ => Call::post(format!("/v1/{action}"), None),
    }
}

/// `status`: readiness (which answers 503 when not ready, so it is not an error here) and the
/// datacenters.
async fn status(client: &Client, json: bool) -> Result<String, CtlError> {
    let (code, ready) = client.send_raw(&Call::get("/readyz")).await?;
    let (_, datacenters) = client.send(&Call::get("/v1/datacenters")).await?;
    let ready_text = String::from_utf8_lossy(&ready).trim().to_owned();
    if json {
        let doc = serde_json::json!({
            "ready": code.is_success(),
            "readiness": ready_text,
            "datacenters": datacenters,
        });
        return Ok(render(&doc, true));
    }
    Ok(format!("{}\n\n{}", ready_text, render(&datacenters, false)))
}

/// The token: `--token-file`'s first line, else `MERIDIAN_TOKEN`, else none (reads that need
/// no token still work; the server answers 401 to the others).
fn token(args: &CtlArgs) -> Result<Option<String>, CtlError> {
    token_from(args.token_file.as_deref())
}

/// The token from `token_file`'s first line, else `MERIDIAN_TOKEN`, else none.
fn token_from(token_file: Option<&std::path::Path>) -> Result<Option<String>, CtlError> {
    if let Some(path) = token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CtlError::Usage(format!("cannot read {}: {e}", path.display())))?;
        let token = text.lines().next().unwrap_or_default().trim().to_owned();
        if token.is_empty() {
            return Err(CtlError::Usage(format!(
                "{} holds no token",
                path.display()
            )));
        }
        return Ok(Some(token));
    }
    Ok(std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

/// A query string of the parameters that are set, each value percent-encoded.
fn query(params: &[(&str, Option<&String>)]) -> String {
    params
        .iter()
        .filter_map(|(key, value)| value.map(|v| format!("{key}={}", segment(v))))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes a path segment or query value (RFC 3986 §2.3: all but unreserved characters).
fn segment(text: &str) -> String {
    let mut res = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            res.push(char::from(byte));
        } else {
            let _ = write!(res, "%{byte:02X}");
        }
    }
    res
}

/// An HTTP/1.1 client of one server: one connection per request, which is all a command line
/// needs.
struct Client {
    server: String,
    token: Option<String>,
}

impl Client {
    /// Sends `call`; a 2xx answer's body as JSON (or as a JSON string when it is text), any
    /// other status as [`CtlError::Refused`] with the server's message.
    async fn send(&self, call: &Call) -> Result<(StatusCode, Value), CtlError> {
        let (status, body) = self.send_raw(call).await?;
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        if status.is_success() {
            return Ok((status, value));
        }
        let message = match &value {
            // The control plane's error body: a stable code, a message, and for an invalid
            // configuration every problem.
            Value::Object(map) => {
                let mut message = map
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| value.to_string(), str::to_owned);
                for problem in map
                    .get("problems")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let _ = write!(message, "\n  {}", problem.as_str().unwrap_or_default());
                }
                message
            }
            Value::String(text) => text.trim().to_owned(),
            other => other.to_string(),
        };
        Err(CtlError::Refused { status, message })
    }

    /// Sends `call` and returns the status and body, whatever the status.
    async fn send_raw(&self, call: &Call) -> Result<(StatusCode, Bytes), CtlError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(call))
            .await
            .unwrap_or_else(|_| {
                Err(self.unreachable(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))
            })
    }

    async fn exchange(&self, call: &Call) -> Result<(StatusCode, Bytes), CtlError> {
        let uri: Uri = format!("{}{}", self.server, call.path)
            .parse()
            .map_err(|e| CtlError::Usage(format!("bad --server URL {}: {e}", self.server)))?;
        if uri.scheme_str() != Some("http") {
            return Err(CtlError::Usage(format!(
                "--server must be an http:// URL, not {}",
                self.server
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| CtlError::Usage(format!("--server {} has no host", self.server)))?
            .clone();
        let port = authority.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((authority.host(), port))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| self.unreachable(e.to_string()))?;
        // The connection task ends when the request is done and `sender` is dropped.
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match &call.body {
            Some(body) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|e| CtlError::Usage(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    }

    fn unreachable(&self, reason: String) -> CtlError {
        CtlError::Unreachable {
            server: self.server.clone(),
            reason,
        }
    }
}

/// Renders an answer: pretty JSON with `json`, else a table for a list of objects, `key  value`
/// lines for an object (its lists of objects as tables under their key), and text as is.
pub fn render(value: &Value, json: bool) -> String {
    if json {
        let mut text = serde_json::to_string_pretty(value).expect("a JSON value serializes");
        text.push('\n');
        return text;
    }
    let mut res = String::new();
    match value {
        Value::Array(items) => table(items, &mut res),
        Value::Object(map) => {
            let width = map.keys().map(String::len).max().unwrap_or(0);
            let mut nested = Vec::new();
            for (key, field) in map {
                match field {
                    Value::Array(items) if items.iter().any(Value::is_object) => {
                        nested.push((key, items));
                    }
                    _ => {
                        let _ = writeln!(res, "{key:width$}  {}", cell(field));
                    }
                }
            }
            for (key, items) in nested {
                let _ = writeln!(res, "\n{key}:");
                table(items, &mut res);
            }
        }
        Value::String(text) => {
            res.push_str(text);
            if !text.ends_with('\n') {
                res.push('\n');
            }
        }
        other => {
            let _ = writeln!(res, "{other}");
        }
    }
    res
}

/// Keys that name what a row is about, so they lead a table (`serde_json` keeps keys sorted).
const LEADING_KEYS: &[&str] = &["seq", "name", "id", "version", "datacenter"];

/// A table of `items`: one column per key (naming keys first, then sorted), one row per item.
fn table(items: &[Value], res: &mut String) {
    if items.is_empty() {
        res.push_str("(none)\n");
        return;
    }
    let mut columns: Vec<&str> = Vec::new();
    for item in items {
        if let Value::Object(map) = item {
            for key in map.keys() {
                if !columns.contains(&key.as_str()) {
                    columns.push(key);
                }
            }
        }
    }
    columns.sort_by_key(|column| {
        let lead = LEADING_KEYS.iter().position(|key| key == column);
        (lead.unwrap_or(LEADING_KEYS.len()), *column)
    });
    if columns.is_empty() {
        for item in items {
            let _ = writeln!(res, "{}", cell(item));
        }
        return;
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|column| item.get(column).map(cell).unwrap_or_default())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .chain([column.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:width$}"))
            .collect();
        let _ = writeln!(res, "{}", line.join("  ").trim_end());
    }
}

/// One value as a table cell: strings bare, `-` for null, lists comma-separated, other values
/// as compact JSON, cut at [`MAX_CELL`] characters.
fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            items.iter().map(cell).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    };
    let text = text.replace(['\n', '\t'], " ");
    if text.chars().count() > MAX_CELL {
        let cut: String = text.chars().take(MAX_CELL - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_a_column_per_key_and_a_row_per_item() {
        let value = serde_json::json!([
            {"name": "us-east", "healthy": true, "load": null},
            {"name": "eu-west", "healthy": false, "drained_services": ["www", "api"]},
        ]);
        let text = render(&value, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("NAME     DRAINED_SERVICES  HEALTHY  LOAD"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("us-east                    true     -"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("eu-west  www,api           false"),
            "{text}"
        );
    }

    #[test]
    fn objects_are_key_value_lines_with_nested_tables() {
        let value = serde_json::json!({"rcode": "NOERROR", "steps": [{"dc": "eu-west"}]});
        assert_eq!(
            render(&value, false),
            "rcode  NOERROR\n\nsteps:\nDC\neu-west\n"
        );
        assert_eq!(render(&Value::from("a diff\n"), false), "a diff\n");
    }

    #[test]
    fn long_cells_are_cut_and_segments_encoded() {
        let long = "x".repeat(100);
        assert_eq!(cell(&Value::from(long)).chars().count(), MAX_CELL);
        assert_eq!(segment("a b/ç"), "a%20b%2F%C3%A7");
    }
}
