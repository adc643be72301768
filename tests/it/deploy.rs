//! The shipped Kubernetes manifests against the code: the configuration and zone files that
//! `deploy/kubernetes` puts in its ConfigMap pass the real binary's `check-config`, laid out as
//! the pod sees them and with the etcd endpoints the pod is given (by the base and by the
//! external-etcd overlay), and the Deployment's paths and ports are the ones that configuration
//! names.
//! (CI checks the manifests themselves with kustomize, checkov and kubernetes-validate:
//! `.ci/deploy.sh`.)

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_yaml::Value;

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes/meridian");
/// Upper bound for `check-config` on the shipped database (about 4 s in a debug build).
const CHECK: Duration = Duration::from_secs(120);
/// Where deploy/Dockerfile puts the shipped geo database in the image.
const IMAGE_GEODATA: &str = "/etc/meridian/geodata";

fn yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn field<'a>(value: &'a Value, key: &str) -> &'a Value {
    value
        .get(key)
        .unwrap_or_else(|| panic!("no {key:?} in {value:?}"))
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    field(value, key)
        .as_str()
        .unwrap_or_else(|| panic!("{key:?} is not a string in {value:?}"))
}

fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    field(value, key)
        .as_sequence()
        .unwrap_or_else(|| panic!("{key:?} is not a list in {value:?}"))
}

/// The ConfigMap generator `name` of the kustomization in `dir`.
fn generator(dir: &str, name: &str) -> Value {
    let kustomization = yaml(&Path::new(dir).join("kustomization.yaml"));
    list(&kustomization, "configMapGenerator")
        .iter()
        .find(|g| text(g, "name") == name)
        .unwrap_or_else(|| panic!("no configMapGenerator {name:?} in {dir}"))
        .clone()
}

/// The files of the ConfigMap generator `name` in meridian's kustomization: (key, file).
fn generated_files(name: &str) -> Vec<(String, PathBuf)> {
    let generator = generator(MANIFESTS, name);
    list(&generator, "files")
        .iter()
        .map(|entry| {
            let entry = entry.as_str().expect("a file entry is a string");
            let (key, file) = entry.split_once('=').unwrap_or_else(|| {
                let file = Path::new(entry).file_name().expect("a file name");
                (file.to_str().expect("UTF-8"), entry)
            });
            (key.to_owned(), Path::new(MANIFESTS).join(file))
        })
        .collect()
}

/// The value of `key` among the literals of the ConfigMap generator `name` in `dir`.
fn generated_literal(dir: &str, name: &str, key: &str) -> String {
    let generator = generator(dir, name);
    list(&generator, "literals")
        .iter()
        .filter_map(|l| l.as_str()?.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
        .unwrap_or_else(|| panic!("no literal {key} in {name} of {dir}"))
}

/// The Deployment's meridian container.
fn container() -> Value {
    let deployment = yaml(&Path::new(MANIFESTS).join("deployment.yaml"));
    let spec = field(field(field(&deployment, "spec"), "template"), "spec");
    list(spec, "containers")
        .iter()
        .find(|c| text(c, "name") == "meridian")
        .expect("a container named meridian")
        .clone()
}

/// The value after `flag` in the container's arguments.
fn argument(container: &Value, flag: &str) -> String {
    let args: Vec<&str> = list(container, "args")
        .iter()
        .map(|a| a.as_str().expect("arguments are strings"))
        .collect();
    let at = args
        .iter()
        .position(|a| *a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args.get(at + 1)
        .unwrap_or_else(|| panic!("{flag} without a value"))
        .to_string()
}

fn mount_path(container: &Value, volume: &str) -> String {
    list(container, "volumeMounts")
        .iter()
        .find(|m| text(m, "name") == volume)
        .map(|m| text(m, "mountPath").to_owned())
        .unwrap_or_else(|| panic!("no mount of volume {volume:?}"))
}

fn container_port(container: &Value, name: &str) -> u16 {
    list(container, "ports")
        .iter()
        .find(|p| text(p, "name") == name)
        .and_then(|p| p.get("containerPort")?.as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no container port {name:?}"))
}

/// `path` with `.` and `..` resolved, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Runs `check-config` on the ConfigMap's files laid out as the pod sees them, with the etcd
/// endpoints that the ConfigMap `meridian-etcd` of the kustomization in `dir` gives the pod.
fn check_pod_configuration(dir: &str) {
    let container = container();
    let config_path = PathBuf::from(argument(&container, "--config"));
    let mount = PathBuf::from(mount_path(&container, "config"));
    let files = generated_files("meridian-config");
    assert!(
        files.iter().any(|(key, _)| mount.join(key) == config_path),
        "--config {} is not a file of the ConfigMap mounted at {}",
        config_path.display(),
        mount.display()
    );

    // The pod's layout in a temporary directory: the ConfigMap's files in zones/ (the mount),
    // and beside it geodata/, which the image fills with the repository's geodata/.
    let root = tempfile::tempdir().expect("a temporary directory");
    let zones = root.path().join("zones");
    std::fs::create_dir(&zones).unwrap();
    for (key, file) in &files {
        std::fs::copy(file, zones.join(key))
            .unwrap_or_else(|e| panic!("copying {}: {e}", file.display()));
    }
    assert_eq!(
        mount.parent().map(|p| p.join("geodata")),
        Some(PathBuf::from(IMAGE_GEODATA)),
        "the configuration's directory must sit beside the image's geodata/"
    );
    std::os::unix::fs::symlink(
        concat!(env!("CARGO_MANIFEST_DIR"), "/geodata"),
        root.path().join("geodata"),
    )
    .unwrap();
    let config_file = zones.join(config_path.file_name().expect("a file name"));

    // MERIDIAN_ETCD_ENDPOINTS selects etcd with these endpoints when `serve` starts; written
    // into the state section, check-config validates them too.
    let endpoints = generated_literal(dir, "meridian-etcd", "MERIDIAN_ETCD_ENDPOINTS");
    let config = yaml(&config_file);
    if config.get("state").is_none() {
        let endpoints: Vec<String> = endpoints.split(',').map(|e| format!("{e:?}")).collect();
        let mut text = std::fs::read_to_string(&config_file).unwrap();
        text.push_str(&format!(
            "\nstate:\n  backend: etcd\n  etcd:\n    endpoints: [{}]\n",
            endpoints.join(", ")
        ));
        std::fs::write(&config_file, text).unwrap();
    }
    let database = Path::new(text(field(&config, "geo"), "database"));
    assert!(
        normalize(&mount.join(database)).starts_with(IMAGE_GEODATA),
        "geo.database {} is not in the image's {IMAGE_GEODATA}",
        database.display()
    );

    let stdout = root.path().join("stdout");
    let stderr = root.path().join("stderr");
    let mut child = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config_file)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&stderr).unwrap())
        .spawn()
        .expect("start the meridian binary");
    let deadline = Instant::now() + CHECK;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll check-config") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("check-config did not finish within {CHECK:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(stdout).unwrap();
    let stderr = std::fs::read_to_string(stderr).unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "check-config refused the ConfigMap's configuration with the endpoints of {dir}:\n{stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!("{}: ok", config_file.display())),
        "{stdout}"
    );
}

#[test]
fn the_kubernetes_configmap_holds_a_valid_configuration() {
    check_pod_configuration(MANIFESTS);
}

#[test]
fn the_external_etcd_overlay_gives_valid_endpoints() {
    check_pod_configuration(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/external-etcd"
    ));
}

#[test]
fn the_deployment_exposes_the_ports_the_configuration_listens_on() {
    let container = container();
    let (_, config_file) = generated_files("meridian-config")
        .into_iter()
        .find(|(key, _)| key.ends_with(".yaml"))
        .expect("a configuration file in the ConfigMap");
    let server = field(&yaml(&config_file), "server").clone();
    let dns: Vec<SocketAddr> = list(&server, "dns")
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap()
                .parse()
                .expect("server.dns holds addresses")
        })
        .collect();
    assert!(!dns.is_empty());
    for address in &dns {
        assert!(
            address.ip().is_unspecified(),
            "{address}: a pod must listen on every address"
        );
        assert_eq!(address.port(), container_port(&container, "dns-udp"));
        assert_eq!(address.port(), container_port(&container, "dns-tcp"));
    }
    let control: SocketAddr = text(&server, "control")
        .parse()
        .expect("server.control is an address");
    assert!(control.ip().is_unspecified());
    assert_eq!(control.port(), container_port(&container, "control"));
}
