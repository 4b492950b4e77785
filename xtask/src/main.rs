//! The project's one task runner (`cargo xtask <task>`); not a library layer.
//!
//! Tasks: `ci` (fmt, clippy, layers, conventions, tests, docs, examples), `check-layers`,
//! `examples` (the client crates' examples against `mq serve`), `fuzz-smoke`,
//! `bench`, `soak-tests N` (every integration-test binary N times in a row), `interop [ENGINE…]`
//! (our client against Apache RocketMQ's Java name server and broker).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

mod instructions;
mod interop;
mod store_bench;

/// Allowed `mq-*` dependency edges (normal and build dependencies). Crates not listed here
/// (the CLI, test support, benches, fuzz, xtask) may depend on anything.
const LAYERS: &[(&str, &[&str])] = &[
    ("mq-remoting", &[]),
    ("mq-client-api", &["mq-remoting"]),
    ("mq-client-instance", &["mq-remoting", "mq-client-api"]),
    (
        "mq-producer",
        &[
            "mq-remoting",
            "mq-client-api",
            "mq-client-instance",
            "mq-grpc",
        ],
    ),
    (
        "mq-consumer",
        &[
            "mq-remoting",
            "mq-client-api",
            "mq-client-instance",
            "mq-grpc",
        ],
    ),
    ("mq-namesrv", &["mq-remoting", "mq-client-api"]),
    ("mq-broker", &["mq-remoting", "mq-client-api"]),
    ("mq-grpc", &["mq-remoting", "mq-client-api"]),
];

/// The only crate a layered crate may add as a dev-dependency beyond its allowed edges.
const DEV_EXTRA: &str = "mq-test-support";

/// Dev-dependency edges beyond that, for examples that show both sides of an exchange: the
/// producer's request-reply example runs a consumer as the replier.
const DEV_EXAMPLES: &[(&str, &str)] = &[("mq-producer", "mq-consumer")];

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
        "soak-tests" => soak_tests(rest),
        "interop" => interop::interop(rest),
        "interop-netns" => interop::in_netns(rest),
        "interop-bench" => interop::interop_bench(rest),
        "interop-bench-netns" => interop::bench_in_netns(rest),
        "store-bench" => store_bench::store_bench(rest),
        "instructions" => instructions::instructions(rest),
        "examples" => examples(),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|check-layers|check-conventions|fuzz-smoke [secs]|bench [--quick] [--skip-criterion] [--skip-store]|soak-tests [runs]|examples|interop [ours|5.3|4.9]…|interop-bench|store-bench [--quick]|instructions [--quick]>"
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

pub(crate) type Result<T = ()> = std::result::Result<T, String>;

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set, else `target/` at the root.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

pub(crate) fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result {
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

/// A locked debug build of `packages`, with `extra` flags.
pub(crate) fn build_debug(packages: &[&str], extra: &[&str]) -> Result {
    let mut args = vec!["build", "--locked"];
    for p in packages {
        args.extend(["-p", p]);
    }
    args.extend_from_slice(extra);
    cargo(&args, &[])
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
    examples()?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

/// The client crates' examples, in the order they run: the producers send to `ExampleTopic`
/// what the consumers then read back.
const EXAMPLES: &[(&str, &str)] = &[
    ("mq-producer", "sync"),
    ("mq-producer", "async"),
    ("mq-producer", "batch"),
    ("mq-producer", "ordered"),
    ("mq-producer", "transaction"),
    ("mq-producer", "request_reply"),
    ("mq-consumer", "push"),
    ("mq-consumer", "pull"),
    ("mq-consumer", "stream"),
];

/// How long one example may run.
const EXAMPLE_LIMIT: Duration = Duration::from_secs(60);

/// Builds `mq` and the client crates' examples, starts `mq serve` on free loopback ports with
/// a fresh store, and runs every example against it (`NAMESRV_ADDR`); each must exit 0 within
/// a minute.
fn examples() -> Result {
    build_debug(
        &["mq-cli", "mq-producer", "mq-consumer"],
        &["--bins", "--examples"],
    )?;
    let debug = target_dir().join("debug");
    let work = target_dir().join("examples-run");
    let store = work.join("store");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let (_server, namesrv) = start_mq_serve(&debug.join("mq"), &store, &work)?;
    for (krate, name) in EXAMPLES {
        let started = Instant::now();
        let out = work.join(format!("{krate}-{name}.out"));
        let file = std::fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let mut child = Command::new(debug.join("examples").join(name))
            .env("NAMESRV_ADDR", &namesrv)
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot run example {krate}/{name}: {e}"))?;
        let Some(status) = wait_within(&mut child, started, EXAMPLE_LIMIT)? else {
            return Err(format!(
                "example {krate}/{name} ran past {EXAMPLE_LIMIT:?}; see {}",
                out.display()
            ));
        };
        if !status.success() {
            return Err(format!(
                "example {krate}/{name} failed ({status}); see {}",
                out.display()
            ));
        }
        eprintln!(
            "example {krate}/{name}: ok ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
    }
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
            let ok = allowed.contains(dep_name)
                || (is_dev && (dep_name == DEV_EXTRA || DEV_EXAMPLES.contains(&(name, dep_name))));
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

/// Builds every integration-test binary (`tests/it`) once, then runs each `runs` times in a row
/// (default 20), stopping at nothing: the report lists every binary that failed and how often.
/// A test that fails one run in twenty is a bug, never a retry.
fn soak_tests(args: &[String]) -> Result {
    let runs: u32 = match args.first() {
        Some(n) => n
            .parse()
            .map_err(|_| format!("runs must be a number, not {n:?}"))?,
        None => 20,
    };
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "test",
            "--workspace",
            "--tests",
            "--locked",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err("building the test binaries failed".into());
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_it = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, Some(exe), Some(pkg)) = (
            is_it,
            msg["executable"].as_str(),
            msg["package_id"].as_str(),
        ) {
            // `path+file:///…/crates/NAME#VERSION`: tests run in their package's directory,
            // as under `cargo test`.
            let dir = pkg
                .split_once("file://")
                .map_or(pkg, |(_, rest)| rest)
                .split('#')
                .next()
                .unwrap_or(pkg);
            let dir = PathBuf::from(dir);
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(pkg)
                .to_owned();
            binaries.push((name, dir, PathBuf::from(exe)));
        }
    }
    if binaries.is_empty() {
        return Err("found no integration-test binary".into());
    }
    let mut failures = Vec::new();
    for (name, dir, exe) in &binaries {
        let started = Instant::now();
        let mut failed = 0;
        for run in 1..=runs {
            let (success, stdout) = run_bounded(exe, dir, SOAK_RUN_LIMIT)?;
            if !success {
                failed += 1;
                let text = String::from_utf8_lossy(&stdout);
                let failing: Vec<&str> = text
                    .lines()
                    .filter(|l| l.starts_with("test ") && l.ends_with("FAILED"))
                    .collect();
                eprintln!("  {name}: run {run} failed: {failing:?}");
                // The failures' own output (panic messages), a few lines each.
                for line in text
                    .lines()
                    .skip_while(|l| !l.starts_with("---- "))
                    .take_while(|l| !l.starts_with("failures:"))
                    .take(40)
                {
                    eprintln!("    {line}");
                }
            }
        }
        eprintln!(
            "soak-tests: {name} ({}) {}/{runs} green in {:.1}s",
            exe.file_name().and_then(|f| f.to_str()).unwrap_or("?"),
            runs - failed,
            started.elapsed().as_secs_f64()
        );
        if failed > 0 {
            failures.push(format!("{name}: {failed}/{runs} runs failed"));
        }
    }
    if failures.is_empty() {
        eprintln!("soak-tests: every binary green {runs} runs in a row");
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// How long one run of a test binary may take in `soak-tests` (the longest takes about 15 s).
const SOAK_RUN_LIMIT: Duration = Duration::from_secs(300);

/// Runs the test binary `exe` in `dir`: whether it passed, and what it printed. A run still
/// going after `limit` is killed and counts as failed; its output then ends with the tests
/// that had not finished (those `--list` names and the run never reported), since a hang
/// otherwise says nothing of where it is.
fn run_bounded(exe: &Path, dir: &Path, limit: Duration) -> Result<(bool, Vec<u8>)> {
    let cannot = |e: std::io::Error| format!("cannot run {}: {e}", exe.display());
    // A group of its own: a run killed for its time takes the servers it started with it.
    let mut child = Command::new(exe)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(cannot)?;
    // Read on a thread of its own, so that a full pipe never stalls the tests.
    let mut pipe = child.stdout.take().ok_or("no stdout of the test binary")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut pipe, &mut out);
        out
    });
    let status = wait_within(&mut child, Instant::now(), limit)?;
    let mut out = reader.join().map_err(|_| "the output reader panicked")?;
    let Some(status) = status else {
        let listed = Command::new(exe)
            .current_dir(dir)
            .args(["--list", "--format", "terse"])
            .output()
            .map_err(cannot)?;
        let done = String::from_utf8_lossy(&out).into_owned();
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        let unfinished: Vec<&str> = listed
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .filter(|name| !done.contains(&format!("test {name} ... ")))
            .collect();
        // As libtest reports failures: a line per test, then what happened.
        let mut report = String::from("\n");
        for name in &unfinished {
            report.push_str(&format!("test {name} ... FAILED\n"));
        }
        report.push_str(&format!(
            "---- killed after {limit:?}, these still running: {}\n",
            unfinished.join(", ")
        ));
        out.extend(report.into_bytes());
        return Ok((false, out));
    };
    Ok((status.success(), out))
}

/// Waits for `child`, started at `started`, until `limit` has passed since; kills it then
/// (`None`).
fn wait_within(
    child: &mut std::process::Child,
    started: Instant,
    limit: Duration,
) -> Result<Option<std::process::ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(Some(status));
        }
        if started.elapsed() > limit {
            // The child's group when it leads one (soak runs), else the child alone.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(std::process::Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
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

/// How a bench row's sends travel.
#[derive(Clone, Copy)]
enum Wire {
    /// Remoting with JSON headers (the default, as in Java).
    Json,
    /// Remoting with ROCKETMQ (binary) headers.
    RocketMq,
    /// Remoting with JSON headers, the client's writes not coalesced
    /// (`--coalesce-writes false`).
    Uncoalesced,
    /// RocketMQ 5's gRPC, through the proxy.
    Grpc,
}

/// `mq bench produce` against the name server `namesrv`, the broker's CPU from `pid`, 64 tasks
/// of `window` sends each, JSON out.
fn produce_args<'a>(
    namesrv: &'a str,
    pid: &'a str,
    mode: &'a str,
    size: &'a str,
    duration: &'a str,
    window: &'a str,
) -> Vec<&'a str> {
    vec![
        "bench",
        "produce",
        "--namesrv",
        namesrv,
        "--broker-pid",
        pid,
        "--mode",
        mode,
        "--size",
        size,
        "--duration",
        duration,
        "--window",
        window,
        "--tasks",
        "64",
        "--json",
    ]
}

/// The page's section on one sync send at a time, a row per client setting and echo: its
/// latency as a ratio to the echo's round trip at depth 1 (one over the echo's rate), beside
/// each side's CPU per message.
fn one_at_a_time_section(rows: &[(&str, serde_json::Value)]) -> String {
    let mut md = String::from(
        "\n## One send at a time\n\nSync 1 KiB sends from one task, each awaited before the \
         next (1 in flight), as a service that sends as it handles its own requests. The echo's \
         round trip is its mean at the same depth (one over its rate), measured in the same run \
         against an echo served in the bench's own process (`--baseline echo`) or by a process \
         of its own, as our broker is (`--baseline echo-process`): a round trip between two \
         processes also waits for the other one to be woken, which on a virtual machine whose \
         other CPU is idle costs tens of microseconds each way. The echo's CPU per round trip \
         is the bench process's over the echo's run (both ends when the echo is served there), \
         and the echo process's: the last column is the broker's CPU per message over the \
         latter, what the same wake-ups cost a server that does nothing but answer.\n\n\
         | client | echo | msg/s | p50 µs | p99 µs | echo round trip µs | p50 / echo round trip | client CPU µs/msg | broker CPU µs/msg | echo CPU µs/round trip | broker / echo server CPU |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (name, v) in rows {
        let num = |k: &str| v[k].as_f64();
        let show = |x: Option<f64>, digits: usize| {
            x.map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
        };
        let us = |k: &str| num(k).map(|ms| ms * 1000.0);
        let echo_rtt = num("echo_tps").filter(|t| *t > 0.0).map(|t| 1e6 / t);
        let ratio = us("p50_ms").zip(echo_rtt).map(|(p50, rtt)| p50 / rtt);
        let echo_server = num("echo_server_cpu_us_per_round_trip");
        let echo_cpu = match (num("echo_cpu_us_per_round_trip"), echo_server) {
            (Some(client), Some(server)) => format!("{client:.1} client + {server:.1} server"),
            (Some(both), None) => format!("{both:.1} (both ends)"),
            (None, _) => "-".to_owned(),
        };
        let broker_to_echo = num("broker_cpu_us_per_msg")
            .zip(echo_server.filter(|us| *us > 0.0))
            .map(|(broker, echo)| broker / echo);
        md.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {echo_cpu} | {} |\n",
            v["echo"].as_str().unwrap_or("-"),
            show(num("tps"), 0),
            show(us("p50_ms"), 0),
            show(us("p99_ms"), 0),
            show(echo_rtt, 0),
            show(ratio, 2),
            show(num("cpu_us_per_msg"), 1),
            show(num("broker_cpu_us_per_msg"), 1),
            show(broker_to_echo, 2),
        ));
    }
    md
}

/// The page's section on the client's memory over a long run: its anonymous resident memory
/// at the end, and what it gained per message from a third into the run to its end.
fn memory_section(rows: &[(String, &str, serde_json::Value)], seconds: &str) -> String {
    let mut md = format!(
        "\n## Client memory over a long run\n\n`mq bench` sends for {seconds} s, 64 × 16 in \
         flight. Anon RSS is the process's anonymous resident memory (`RssAnon` in \
         `/proc/PID/status`: heap and stacks) at the end; growth is what it gained per \
         acknowledged message from a third into the run (past start-up and the first round of \
         buffers) to the end. A client that does not grow with the messages it sends reads near \
         zero; shorter runs still count part of the start-up.\n\n\
         | bench | size (B) | messages | msg/s | anon RSS MB | growth B/msg |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for (name, size, v) in rows {
        let show = |k: &str, digits: usize| {
            v[k].as_f64()
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
        };
        md.push_str(&format!(
            "| {name} | {size} | {} | {} | {} | {} |\n",
            show("ok", 0),
            show("tps", 0),
            show("rss_mb", 1),
            show("rss_growth_bytes_per_msg", 3),
        ));
    }
    md
}

/// Starts `mq serve` with `extra` flags on free loopback ports with a fresh store under
/// `work`; returns the server (killed on drop) and its name server address.
pub(crate) fn mq_serve(
    mq: &Path,
    work: &Path,
    extra: &[&std::ffi::OsStr],
) -> Result<(interop::Server, String)> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    start_mq_serve_with(mq, &work.join("store"), work, extra)
}

/// Starts `mq serve` on free loopback ports with the store `store` (its output in `work`);
/// returns it once its broker listens, and its name server address.
pub(crate) fn start_mq_serve(
    mq: &Path,
    store: &Path,
    work: &Path,
) -> Result<(interop::Server, String)> {
    start_mq_serve_with(mq, store, work, &[])
}

/// [`start_mq_serve`] with more `mq serve` flags.
fn start_mq_serve_with(
    mq: &Path,
    store: &Path,
    work: &Path,
    extra: &[&std::ffi::OsStr],
) -> Result<(interop::Server, String)> {
    let mut command = Command::new(mq);
    command
        .args(["serve", "--namesrv-port", "0", "--broker-port", "0"])
        .arg("--store-dir")
        .arg(store)
        .args(extra);
    start_serve("mq serve", &mut command, work)
}

/// Starts `command`, an `mq serve` (possibly run by another program, as callgrind), named
/// `name`; returns it once its broker listens, and its name server address.
pub(crate) fn start_serve(
    name: &str,
    command: &mut Command,
    work: &Path,
) -> Result<(interop::Server, String)> {
    let mut server = interop::Server::start(name, command, work)?;
    server.wait_for("broker listening on")?;
    let namesrv = printed_address(&server, "name server")?;
    Ok((server, namesrv))
}

/// The address `mq serve` printed for `what` (`<what> listening on <address>`).
fn printed_address(server: &interop::Server, what: &str) -> Result<String> {
    let prefix = format!("{what} listening on ");
    server
        .output()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|a| a.trim().to_owned())
        .ok_or_else(|| format!("mq serve printed no {what} address"))
}

/// Runs `mq ARGS` (a `bench` with `--json`) and returns the JSON it printed.
pub(crate) fn mq_bench_json(mq: &Path, args: &[&str]) -> Result<serde_json::Value> {
    bench_json(Command::new(mq).args(args))
}

/// Runs `command` (an `mq bench` with `--json`, possibly run by another program) and returns
/// the JSON it printed.
pub(crate) fn bench_json(command: &mut Command) -> Result<serde_json::Value> {
    let out = command.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad bench JSON: {e}"))
}

/// Async 1 KiB sends against `mq serve` plain, with ACL, and with TLS enforced, one after the
/// other, each server in its own process: the rows of the security table.
fn security_rows(mq: &Path, duration: &str) -> Result<Vec<(String, serde_json::Value)>> {
    let work = target_dir().join("bench-security");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let acl = work.join("plain_acl.yml");
    std::fs::write(
        &acl,
        "accounts:\n  - accessKey: RocketMQ\n    secretKey: 12345678\n    \
         defaultTopicPerm: PUB|SUB\n    defaultGroupPerm: PUB|SUB\n",
    )
    .map_err(|e| e.to_string())?;
    // A certificate of this run only, never committed.
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    let (cert, key) = (work.join("cert.pem"), work.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&key, certified.key_pair.serialize_pem()).map_err(|e| e.to_string())?;
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let runs: [(&str, Vec<&std::ffi::OsStr>, Vec<&std::ffi::OsStr>); 3] = [
        ("plain", vec![], vec![]),
        (
            "ACL",
            vec![os("--acl"), acl.as_os_str()],
            vec![
                os("--access-key"),
                os("RocketMQ"),
                os("--secret-key"),
                os("12345678"),
            ],
        ),
        (
            "TLS",
            vec![
                os("--tls-cert"),
                cert.as_os_str(),
                os("--tls-key"),
                key.as_os_str(),
                os("--tls-mode"),
                os("enforcing"),
            ],
            vec![os("--tls-ca"), cert.as_os_str()],
        ),
    ];
    let mut rows = Vec::new();
    for (name, serve, client) in runs {
        let dir = work.join(name);
        let (server, namesrv) = start_mq_serve_with(mq, &dir.join("store"), &work, &serve)?;
        let pid = server.pid().to_string();
        let mut args = produce_args(&namesrv, &pid, "async", "1024", duration, "16");
        let client: Vec<String> = client
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        args.extend(client.iter().map(String::as_str));
        let v = mq_bench_json(mq, &args);
        drop(server);
        rows.push((name.to_owned(), v?));
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(rows)
}

/// The `mq serve` of one `cargo xtask bench` run, with its gRPC proxy (so that the gRPC rows'
/// proxy CPU counts on the server's side), on an empty store in `work`, stopped when dropped
/// (the next one removes its store).
///
/// A run gets a server of its own: on these machines the broker's writes slowed down once one
/// store held some 5 GB (pwrite 18 → 82 µs a call, its CPU per message 2.0 → 4.5 µs, most of
/// it in the kernel's copy into the page cache), so that rows run later on one shared server
/// were measured against a slower broker than the first ones.
struct BenchServe {
    _server: interop::Server,
    namesrv: String,
    grpc: String,
    pid: String,
}

impl BenchServe {
    fn start(mq: &Path, work: &Path) -> Result<Self> {
        let (mut server, namesrv) = mq_serve(mq, work, &["--grpc-port".as_ref(), "0".as_ref()])?;
        // Printed after the broker's line, which is all `mq_serve` waits for.
        server.wait_for("gRPC proxy listening on")?;
        let grpc = printed_address(&server, "gRPC proxy")?;
        let pid = server.pid().to_string();
        Ok(Self {
            _server: server,
            namesrv,
            grpc,
            pid,
        })
    }
}

/// Runs the criterion suites and a fixed `mq bench` matrix, then writes
/// `docs/performance.md` and the plots in `docs/perf/` (regenerated, never hand-edited), then
/// the store's fill rows (`store-bench`, which needs about 5 GB of disk, 1.5 with `--quick`).
/// `--quick` shortens every run; `--skip-criterion` leaves the criterion suites out and
/// `--skip-store` the store rows (kept from the last run).
fn bench(args: &[String]) -> Result {
    let quick = args.iter().any(|a| a == "--quick");
    let skip_criterion = args.iter().any(|a| a == "--skip-criterion");
    let root = root();
    let perf = root.join("docs/perf");
    std::fs::create_dir_all(&perf).map_err(|e| e.to_string())?;
    let mut criterion_lines = Vec::new();
    if !skip_criterion {
        let measure = if quick { "1" } else { "3" };
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "bench",
                "-p",
                "mq-benches",
                "--",
                "--warm-up-time",
                "1",
                "--measurement-time",
                measure,
            ])
            .current_dir(&root)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "criterion failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut name = String::new();
        for line in text.lines() {
            let t = line.trim();
            if !line.starts_with(' ')
                && !t.is_empty()
                && !t.starts_with("Benchmarking")
                && !t.starts_with("Found")
            {
                name = t.split_whitespace().next().unwrap_or_default().to_owned();
            }
            // Skip criterion's comparison with an earlier run (percent changes).
            if t.contains('%') {
                continue;
            }
            if let Some(rest) = t
                .strip_prefix("time:")
                .or_else(|| t.split_once("time:").map(|(_, r)| r))
            {
                criterion_lines.push(format!("| {name} | time {} |", rest.trim()));
            } else if let Some(rest) = t.strip_prefix("thrpt:") {
                criterion_lines.push(format!("| {name} | thrpt {} |", rest.trim()));
            }
        }
    }
    cargo(&["build", "--release", "-p", "mq-cli"], &[])?;
    let mq = target_dir().join("release/mq");
    // The broker runs as its own process, as users run it, so that each side's CPU is its own:
    // a fresh one on an empty store for every run (see `BenchServe`).
    let work = target_dir().join("bench-serve");
    let duration = if quick { "2" } else { "5" };
    let mut rows = Vec::new();
    // Every mode at two sizes over remoting, sync and async 1 KiB again with the client's
    // writes not coalesced, async 1 KiB again with ROCKETMQ headers, then
    // sync, async and auto-batched async over gRPC (RocketMQ 5's transport, through the proxy
    // of the same `mq serve`, by our GrpcProducer).
    let mut runs: Vec<(&str, &str, Wire)> = Vec::new();
    for mode in ["sync", "async", "auto-batch", "oneway", "batch"] {
        for size in ["100", "1024"] {
            runs.push((mode, size, Wire::Json));
        }
    }
    runs.extend([
        ("sync", "1024", Wire::Uncoalesced),
        ("async", "1024", Wire::Uncoalesced),
        ("async", "1024", Wire::RocketMq),
        ("sync", "1024", Wire::Grpc),
        ("async", "1024", Wire::Grpc),
        ("auto-batch", "1024", Wire::Grpc),
    ]);
    for (mode, size, wire) in runs {
        let window = if mode.contains("async") || mode == "auto-batch" {
            "16"
        } else {
            "1"
        };
        let (name, file) = match wire {
            Wire::Json => (
                format!("produce {mode}"),
                format!("perf/produce-{mode}-{size}.svg"),
            ),
            Wire::RocketMq => (
                format!("produce {mode}, ROCKETMQ headers"),
                format!("perf/produce-{mode}-rocketmq-{size}.svg"),
            ),
            Wire::Uncoalesced => (
                format!("produce {mode}, writes not coalesced"),
                format!("perf/produce-{mode}-uncoalesced-{size}.svg"),
            ),
            Wire::Grpc => (
                format!("produce {mode} over gRPC"),
                format!("perf/produce-{mode}-grpc-{size}.svg"),
            ),
        };
        let plot = root.join("docs").join(&file);
        let plot = plot.to_string_lossy();
        let serve = BenchServe::start(&mq, &work)?;
        let (namesrv, pid, grpc) = (&serve.namesrv, &serve.pid, &serve.grpc);
        let mut args = produce_args(namesrv, pid, mode, size, duration, window);
        args.extend(["--baseline", "echo", "--plot", &plot]);
        match wire {
            Wire::Json => {}
            Wire::RocketMq => args.extend(["--codec", "rocketmq"]),
            Wire::Uncoalesced => args.extend(["--coalesce-writes", "false"]),
            Wire::Grpc => args.extend(["--transport", "grpc", "--grpc-endpoint", grpc]),
        }
        let v = mq_bench_json(&mq, &args)?;
        rows.push((name, size.to_owned(), v, file));
    }
    // One send at a time, as a service that awaits each send: the latency against the echo's
    // round trip at the same depth.
    let mut one_at_a_time = Vec::new();
    for echo in ["echo", "echo-process"] {
        for (name, extra) in [
            ("default", None),
            ("writes not coalesced", Some(["--coalesce-writes", "false"])),
        ] {
            let serve = BenchServe::start(&mq, &work)?;
            let mut args = produce_args(&serve.namesrv, &serve.pid, "sync", "1024", duration, "1");
            if let Some(i) = args.iter().position(|a| *a == "--tasks") {
                args[i + 1] = "1";
            }
            args.extend(["--baseline", echo]);
            args.extend(extra.into_iter().flatten());
            one_at_a_time.push((name, mq_bench_json(&mq, &args)?));
        }
    }
    // The client's memory over a run long enough to leave its start-up behind.
    let long = if quick { "6" } else { "30" };
    let mut memory = Vec::new();
    for (mode, size, window) in [("async", "1024", "16"), ("auto-batch", "100", "16")] {
        let serve = BenchServe::start(&mq, &work)?;
        let args = produce_args(&serve.namesrv, &serve.pid, mode, size, long, window);
        memory.push((format!("produce {mode}"), size, mq_bench_json(&mq, &args)?));
    }
    let plot = perf.join("consume-1024.svg");
    let plot = plot.to_string_lossy();
    let serve = BenchServe::start(&mq, &work)?;
    let namesrv = &serve.namesrv;
    let consumed = mq_bench_json(
        &mq,
        &[
            "bench",
            "consume",
            "--namesrv",
            namesrv,
            "--topic",
            "BenchConsume",
            "--size",
            "1024",
            "--count",
            if quick { "20000" } else { "100000" },
            "--broker-pid",
            &serve.pid,
            "--json",
            "--plot",
            &plot,
        ],
    );
    drop(serve);
    let _ = std::fs::remove_dir_all(&work);
    let v = consumed?;
    rows.push((
        "consume".into(),
        "1024".into(),
        v,
        "perf/consume-1024.svg".into(),
    ));

    let security = security_rows(&mq, duration)?;

    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mut md = String::new();
    md.push_str("# Performance\n\n");
    md.push_str("Generated by `cargo xtask bench`; do not edit by hand. ");
    md.push_str(&format!(
        "Machine: {cores} cores. Figures are ratios against a raw framed TCP echo "
    ));
    md.push_str(
        "(same payload size, same number of requests in flight) measured in the same run, since these ",
    );
    md.push_str("machines are shared and noisy: read the ratio, not the absolute number.\n\n");
    md.push_str("## `mq bench` against `mq serve` in its own process (ASYNC flush)\n\n");
    md.push_str(
        "Every row runs against an `mq serve` of its own, started on an empty store: on these machines a broker's writes slow down once its store holds some 5 GB (its CPU per 1 KiB message about doubles, in the kernel's copy into the page cache), which rows run later on one long-lived server would otherwise pay and the first ones not.\n\n",
    );
    md.push_str("| bench | size (B) | msg/s | p50 ms | p99 ms | p999 ms | echo msg/s | ratio to echo | client CPU µs/msg | broker CPU µs/msg | echo CPU µs/round trip | plot |\n");
    md.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (name, size, v, plot) in &rows {
        let f = |k: &str| {
            v[k].as_f64()
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"))
        };
        let tps = v["tps"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.0}"));
        let echo = v["echo_tps"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.0}"));
        let one = |k: &str| {
            v[k].as_f64()
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.1}"))
        };
        md.push_str(&format!(
            "| {name} | {size} | {tps} | {} | {} | {} | {echo} | {} | {} | {} | {} | [svg]({plot}) |\n",
            f("p50_ms"),
            f("p99_ms"),
            f("p999_ms"),
            f("ratio_to_echo"),
            one("cpu_us_per_msg"),
            one("broker_cpu_us_per_msg"),
            one("echo_cpu_us_per_round_trip"),
        ));
    }
    md.push_str(
        "\nAuto-batch rows are async sends gathered by the producer's accumulator (linger 5 ms, ",
    );
    md.push_str(
        "256 KiB or 256 messages per batch); async and auto-batch rows keep 64 × 16 sends in flight, the others 64, and each echo baseline uses the same depth. ",
    );
    md.push_str(
        "The ROCKETMQ row sends the async 1 KiB messages with request headers in RocketMQ's binary serialize type (`mq bench --codec rocketmq`, `ClientConfig::with_serialize_type`; Java clients: `-Drocketmq.serialize.type=ROCKETMQ`) instead of the default JSON; the broker answers in the request's type. ",
    );
    md.push_str(
        "By default the client coalesces its writes (`ClientConfig::with_coalesced_writes`): before each write, while at most 128 requests await answers, its connection lets the tasks that are ready queue their requests too. The rows whose writes are not coalesced (`mq bench --coalesce-writes false`) write as soon as the writer is woken; compare them with the rows of the same mode and size above. ",
    );
    md.push_str(
        "The gRPC rows send through the gRPC proxy of the same `mq serve` (`--grpc-port`) with `GrpcProducer`, one message per request, except the auto-batch row, whose sends the producer gathers as over remoting (`GrpcProducerConfig::with_batching`, the same settings); the proxy's CPU is in the broker column. ",
    );
    md.push_str(
        "Batch rows count messages (16 per request). Consume latency is from the producer's born ",
    );
    md.push_str(
        "timestamp to the listener, after a preload, so it mostly measures the backlog; its CPU \
         is the push consumer's (start, pulls, listener) and the broker's over the consuming \
         window, per message consumed. ",
    );
    md.push_str(
        "CPU per message is user + system time over the measured window (from `/proc/PID/stat`, \
         10 ms ticks) divided by the messages acknowledged: the client's is `mq bench`'s own \
         process, the broker's is the `mq serve` process (name server included, idle here). \
         The echo's CPU is `mq bench`'s over the echo's run, both its ends, per round trip: \
         compare it with the client's and the broker's together. The echo's client is a task \
         of the bench's runtime that reads the answers, and a writer task that writes each \
         frame with a write of its own as answers make room: it gathers no frames, where our \
         client and broker do.\n",
    );
    md.push_str(&one_at_a_time_section(&one_at_a_time));
    md.push_str(&memory_section(&memory, long));
    md.push_str(
        "\n## Security: ACL signatures and TLS\n\nAsync 1 KiB sends, 64 × 16 in flight, each \
         against its own `mq serve`: plain, with `--acl` (every request signed by the client \
         and checked by the broker), and with `--tls-mode enforcing` (a certificate made for \
         the run). Ratios are to the plain row of the same run.\n\n\
         | server | msg/s | ratio to plain | p50 ms | client CPU µs/msg | broker CPU µs/msg |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    let plain_tps = security
        .first()
        .and_then(|(_, v)| v["tps"].as_f64())
        .unwrap_or(f64::NAN);
    for (name, v) in &security {
        let num = |k: &str, digits: usize| {
            v[k].as_f64()
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
        };
        let ratio = v["tps"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |x| format!("{:.2}", x / plain_tps));
        md.push_str(&format!(
            "| {name} | {} | {ratio} | {} | {} | {} |\n",
            num("tps", 0),
            num("p50_ms", 2),
            num("cpu_us_per_msg", 1),
            num("broker_cpu_us_per_msg", 1),
        ));
    }
    if !criterion_lines.is_empty() {
        md.push_str("\n## Criterion suites (`cargo bench -p mq-benches`)\n\n| benchmark | result |\n| --- | --- |\n");
        for l in &criterion_lines {
            md.push_str(l);
            md.push('\n');
        }
    }
    // Sections their own commands write: carried over.
    let old = std::fs::read_to_string(root.join("docs/performance.md")).unwrap_or_default();
    for name in interop::OWN_SECTIONS {
        if let Some(section) = interop::section_of(&old, name) {
            md.push('\n');
            md.push_str(section);
            md.push('\n');
        }
    }
    std::fs::write(root.join("docs/performance.md"), md).map_err(|e| e.to_string())?;
    eprintln!(
        "xtask bench: wrote docs/performance.md and {} plots",
        rows.len()
    );
    if args.iter().any(|a| a == "--skip-store") {
        return Ok(());
    }
    let store_args: Vec<String> = if quick {
        vec!["--quick".to_owned()]
    } else {
        Vec::new()
    };
    store_bench::store_bench(&store_args)
}
