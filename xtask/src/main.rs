//! The project's one task runner (`cargo xtask <task>`); not a library layer.
//!
//! Tasks: `ci` (fmt, clippy, layers, conventions, tests, docs), `check-layers`, `fuzz-smoke`,
//! `bench`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Allowed `mq-*` dependency edges (normal and build dependencies). Crates not listed here
/// (the CLI, test support, benches, fuzz, xtask) may depend on anything.
const LAYERS: &[(&str, &[&str])] = &[
    ("mq-remoting", &[]),
    ("mq-client-api", &["mq-remoting"]),
    ("mq-client-instance", &["mq-remoting", "mq-client-api"]),
    (
        "mq-producer",
        &["mq-remoting", "mq-client-api", "mq-client-instance"],
    ),
    (
        "mq-consumer",
        &["mq-remoting", "mq-client-api", "mq-client-instance"],
    ),
    ("mq-namesrv", &["mq-remoting", "mq-client-api"]),
    ("mq-broker", &["mq-remoting", "mq-client-api"]),
];

/// The only crate a layered crate may add as a dev-dependency beyond its allowed edges.
const DEV_EXTRA: &str = "mq-test-support";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map_or("help", String::as_str);
    let rest = &args[args.len().min(1)..];
    let result = match task {
        "ci" => ci(),
        "check-layers" => check_layers(),
        "check-conventions" => check_conventions(),
        "fuzz-smoke" => fuzz_smoke(rest),
        "bench" => bench(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|check-layers|check-conventions|fuzz-smoke [secs]|bench>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result {
    let started = Instant::now();
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    eprintln!("  ({:.1}s)", started.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn ci() -> Result {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    check_layers()?;
    check_conventions()?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(&["test", "--workspace", "--all-targets", "--locked"], &[])?;
    cargo(&["test", "--workspace", "--doc", "--locked"], &[])?;
    cargo(
        &["doc", "--workspace", "--no-deps", "--locked"],
        &[(
            "RUSTDOCFLAGS",
            "-D rustdoc::broken_intra_doc_links -D rustdoc::private_intra_doc_links",
        )],
    )?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

fn check_layers() -> Result {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("bad metadata: {e}"))?;
    let layers: BTreeMap<&str, BTreeSet<&str>> = LAYERS
        .iter()
        .map(|(k, v)| (*k, v.iter().copied().collect()))
        .collect();
    let mut violations = Vec::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        let name = pkg["name"].as_str().unwrap_or_default();
        let Some(allowed) = layers.get(name) else {
            continue;
        };
        for dep in pkg["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            if !dep_name.starts_with("mq-") {
                continue;
            }
            let is_dev = dep["kind"].as_str() == Some("dev");
            let ok = allowed.contains(dep_name) || (is_dev && dep_name == DEV_EXTRA);
            if !ok {
                violations.push(format!(
                    "{name} -> {dep_name}{}",
                    if is_dev { " (dev)" } else { "" }
                ));
            }
        }
    }
    if violations.is_empty() {
        eprintln!("check-layers: every mq-* edge is allowed");
        Ok(())
    } else {
        Err(format!(
            "dependency edges outside the layer table:\n  {}",
            violations.join("\n  ")
        ))
    }
}

/// Style rules that can be checked mechanically (style.md rules 1 and 3).
fn check_conventions() -> Result {
    let mut problems = Vec::new();
    let crates = root().join("crates");
    for entry in std::fs::read_dir(&crates).map_err(|e| e.to_string())? {
        let dir = entry.map_err(|e| e.to_string())?.path();
        let lib = dir.join("src/lib.rs");
        if !lib.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&lib).map_err(|e| e.to_string())?;
        let head: Vec<&str> = text.lines().take_while(|l| l.starts_with("//!")).collect();
        if head.is_empty() || !head.iter().any(|l| l.contains("Layer")) {
            problems.push(format!(
                "{}: lib.rs must open with a //! block naming its Layer",
                lib.display()
            ));
        }
    }
    let protocol = crates.join("mq-remoting/src/protocol");
    for entry in std::fs::read_dir(&protocol).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        if text.contains("tokio::") || text.contains("use tokio") {
            problems.push(format!(
                "{}: the protocol half is sans-IO and must not use tokio",
                path.display()
            ));
        }
    }
    if problems.is_empty() {
        eprintln!("check-conventions: ok");
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Runs every fuzz target briefly when cargo-fuzz is installed. cargo-fuzz needs nightly
/// compiler flags; `RUSTC_BOOTSTRAP=1` lets the pinned stable toolchain accept them.
fn fuzz_smoke(args: &[String]) -> Result {
    let secs = args.first().map_or("20", String::as_str);
    let have_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_fuzz {
        eprintln!(
            "fuzz-smoke: cargo-fuzz is not installed (cargo install cargo-fuzz); the corpus is \
             still replayed by `cargo test` (fuzz_corpus tests)"
        );
        return Ok(());
    }
    let targets_dir = root().join("fuzz/fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&targets_dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| {
            let p = e.ok()?.path();
            if p.extension()? == "rs" {
                Some(p.file_stem()?.to_string_lossy().into_owned())
            } else {
                None
            }
        })
        .collect();
    targets.sort();
    for t in &targets {
        let status = Command::new("cargo")
            .args([
                "fuzz",
                "run",
                t,
                "--",
                &format!("-max_total_time={secs}"),
                "-rss_limit_mb=2048",
            ])
            .env("RUSTC_BOOTSTRAP", "1")
            .current_dir(root().join("fuzz"))
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("fuzz target {t} failed"));
        }
    }
    eprintln!("fuzz-smoke: {} targets ran {secs}s each", targets.len());
    Ok(())
}

fn bench(args: &[String]) -> Result {
    let mut cargo_args = vec!["bench", "-p", "mq-benches", "--"];
    cargo_args.extend(args.iter().map(String::as_str));
    cargo(&cargo_args, &[])
}
