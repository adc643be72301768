//! Build script: records the git commit being built, when it is cheap to know, for the
//! `meridian_build_info` metric.
//!
//! `MERIDIAN_GIT_COMMIT` in the build environment wins (for builds from a tarball or a container
//! without git); otherwise `git rev-parse` is asked; when neither answers, the metric says
//! `unknown`. Nothing else is generated.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MERIDIAN_GIT_COMMIT");
    let commit = std::env::var("MERIDIAN_GIT_COMMIT").ok().or_else(|| {
        let output = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
    });
    if let Some(commit) = commit {
        println!("cargo:rustc-env=MERIDIAN_GIT_COMMIT={commit}");
    }
}
