//! `cargo xtask interop [SERVER…]`: every client against every server, the real engine included.
//!
//! * Servers: Apache RocketMQ's Java name server and broker 5.3.3 (`5.3`) and 4.9.7 (`4.9`),
//!   fetched from Maven Central by `interop/engine-*/pom.xml`; and ours, `mq serve` (`ours`).
//! * Clients: ours (`mq quickstart` in every send mode, both header codecs, every compression
//!   codec), Java `rocketmq-client` 4.5.1 (the cases of its `DefaultMQProducerTest`), 4.9
//!   (request-reply) and 5.3 (send modes, codecs, push and lite pull consumers), and the Go
//!   client; then messages across
//!   clients both ways (Java produces, we consume; we produce, Java and Go consume). Maven and
//!   the Go module proxy fetch them (`interop/client-*`).
//!
//! Each server runs in a fresh network namespace that has only `lo` (`unshare --net`): 4.x binds
//! 0.0.0.0 and the HA port always does, and a client without a name server would ask an address
//! server, so nothing can leave the machine. Every (client, server, scenario) is one row; a run
//! over all servers writes the matrix to `docs/compatibility.md`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, build_debug, cargo, root, target_dir};

/// Every server, in the matrix's column order. The Java engines: the newest 5.x release line
/// and the last 4.x one on Maven Central (4.9.8 is not there).
const SERVERS: &[&str] = &["ours", "5.3", "4.9"];

/// The clients, in the matrix's order.
const CLIENTS: &[&str] = &[
    "ours",
    "java 4.5.1",
    "java 4.9",
    "java 5.3",
    "java grpc",
    "python grpc",
    "node grpc",
    "go grpc",
    "go",
];

/// The server under test.
const NAMESRV: &str = "127.0.0.1:9876";

/// A name server that routes neither a new topic nor TBW102 (4.5.1's "no route" case): a bare
/// Java name server beside a Java engine, `mq serve --auto-create-topic false` beside ours.
const NO_ROUTE_NAMESRV: &str = "127.0.0.1:9877";

/// A name server whose only broker checks ACL 1.0: beside the 4.x Java engine
/// (`aclEnable=true`, one account in `plain_acl.yml`) and beside ours (`mq serve --acl` with
/// the same file). 5.3 reads `aclEnable` but enforces nothing without ACL 2.0's own settings,
/// which the harness does not write yet.
const ACL_NAMESRV: &str = "127.0.0.1:9878";

/// A name server beside ours whose only broker enforces TLS (`mq serve --tls-mode
/// enforcing`, a certificate made for the run, [`TLS_CERT`] in the work directory).
const TLS_NAMESRV: &str = "127.0.0.1:9879";

/// The TLS broker's certificate, in the work directory: self-signed for 127.0.0.1, so also
/// the root its clients trust.
const TLS_CERT: &str = "tls-cert.pem";

/// Where our gRPC proxy (`mq proxy`) listens, in front of whichever cluster runs: RocketMQ 5's
/// gRPC clients reach every server through it.
const GRPC_ENDPOINT: &str = "127.0.0.1:8081";

/// Where a second proxy of ours listens, enforcing TLS with the run's certificate: RocketMQ 5's
/// Java client reaches it with its default settings (SSL on, any certificate trusted), Node's
/// and Python's with TLS on and the certificate as their root.
const GRPC_TLS_ENDPOINT: &str = "127.0.0.1:8083";

/// Where a third proxy of ours listens, in front of the ACL broker's cluster ([`ACL_NAMESRV`]):
/// it checks each gRPC call's signature and permissions against the ACL broker's own file,
/// and signs its requests to the broker with [`ACL_ACCOUNT`]. It serves TLS and plain clients
/// alike (permissive), since Go's client speaks TLS by default and the others plain.
const GRPC_ACL_ENDPOINT: &str = "127.0.0.1:8084";

/// Where Apache RocketMQ's own gRPC proxy (`rocketmq-proxy`, cluster mode) listens in front of
/// our broker and the Java 5.3 engine: our gRPC producer and simple consumer, and Java's gRPC
/// client, are checked through it.
const JAVA_PROXY_ENDPOINT: &str = "127.0.0.1:8181";

/// What the Java gRPC client's topics and groups are named with through Apache RocketMQ's proxy,
/// apart from those through ours.
const JAVA_PROXY_SUFFIX: &str = "Apache";

/// Whether `server` runs Apache RocketMQ's gRPC proxy in front of it (at
/// [`JAVA_PROXY_ENDPOINT`]): ours and the 5.x engine, whose brokers serve pop consumption.
fn has_java_proxy(server: &str) -> bool {
    !server.starts_with('4')
}

/// Whether `server` runs a TLS-enforcing broker beside it (at [`TLS_NAMESRV`]).
fn has_tls_broker(server: &str) -> bool {
    server == "ours"
}

/// Whether `server` runs an ACL broker beside it (at [`ACL_NAMESRV`]).
fn has_acl_broker(server: &str) -> bool {
    server == "ours" || server.starts_with('4')
}

/// The Java 4.9 program's arguments: the name server, then the ACL and TLS brokers beside
/// `server`, when it has them.
fn java49_args(server: &str) -> Vec<&'static str> {
    let mut args = vec![NAMESRV];
    if has_acl_broker(server) {
        args.extend(["--acl", ACL_NAMESRV, ACL_ACCOUNT.0, ACL_ACCOUNT.1]);
    }
    if has_tls_broker(server) {
        args.extend(["--tls", TLS_NAMESRV]);
    }
    args
}

/// The ACL file of the ACL brokers: one admin account, [`ACL_ACCOUNT`], free to publish and
/// subscribe anything.
fn plain_acl_yml() -> String {
    let (access_key, secret_key) = ACL_ACCOUNT;
    format!(
        "globalWhiteRemoteAddresses:\n\naccounts:\n  - accessKey: {access_key}\n    \
         secretKey: {secret_key}\n    whiteRemoteAddress:\n    admin: true\n    \
         defaultTopicPerm: PUB|SUB\n    defaultGroupPerm: PUB|SUB\n"
    )
}

/// The ACL broker's account: our signed client uses it, our unsigned one does not.
const ACL_ACCOUNT: (&str, &str) = ("RocketMQ", "12345678");

/// How long a server may take to print its boot line.
const BOOT_LIMIT: Duration = Duration::from_secs(90);

/// How long one client program may run.
const CLIENT_LIMIT: Duration = Duration::from_secs(240);

/// Messages in each cross-client flow.
const CROSS: usize = 20;

/// One `mq` run against the server, and what it must print.
struct Scenario {
    name: &'static str,
    args: &'static [&'static str],
    expect: &'static str,
    /// Whether a 4.x server can take it (LZ4 and ZSTD bodies are 5.x only).
    on_4x: bool,
}

const OURS: &[Scenario] = &[
    Scenario {
        name: "cluster lists the broker",
        args: &["cluster"],
        expect: "broker-a",
        on_4x: true,
    },
    Scenario {
        name: "quickstart, 7 send modes, JSON headers",
        args: &["quickstart"],
        expect: "all 1400 messages consumed once",
        on_4x: true,
    },
    Scenario {
        name: "quickstart, ROCKETMQ headers",
        args: &["quickstart", "--codec", "rocketmq"],
        expect: "all 1400 messages consumed once",
        on_4x: true,
    },
    Scenario {
        name: "quickstart, zlib bodies",
        args: &["quickstart", "--compression", "zlib"],
        expect: "all 1400 messages consumed once",
        on_4x: true,
    },
    Scenario {
        name: "quickstart, LZ4 bodies",
        args: &["quickstart", "--compression", "lz4"],
        expect: "all 1400 messages consumed once",
        on_4x: false,
    },
    Scenario {
        name: "quickstart, ZSTD bodies, ROCKETMQ headers",
        args: &["quickstart", "--compression", "zstd", "--codec", "rocketmq"],
        expect: "all 1400 messages consumed once",
        on_4x: false,
    },
];

/// Failures of the Java engine or client itself, not ours, recognised by the exact shape of the
/// failure: the matrix shows them as known, and they do not fail the run. Anything else that
/// fails does. (client, server prefix, scenario, test on the failure's reason, explanation.)
type KnownTest = fn(&str) -> bool;
const KNOWN_UPSTREAM: &[(&str, &str, &str, KnownTest, &str)] = &[
    (
        "java 5.3",
        "",
        "push consumer reads every message once",
        only_batch_ids_missing,
        "apache/rocketmq#9416 (fixed after 5.3.3): a Java broker copies a batch's unique key \
         into each of its messages, so consumers see one id for the whole batch (ours keeps \
         each message's own id)",
    ),
    (
        "java 5.3",
        "",
        "lite pull consumer reads every message once",
        only_batch_ids_missing,
        "apache/rocketmq#9416, as above",
    ),
    (
        "ours",
        "5.3",
        "gRPC batch through Apache RocketMQ's proxy, one request stored in one queue at \
         consecutive offsets, each message with its own id",
        |reason| reason.starts_with("every message received, all with the batch's first id"),
        "apache/rocketmq#9416, as above: Apache RocketMQ's proxy gives the batch it sends a \
         unique key of its own, which the Java 5.3 broker copies into each message (through \
         our proxy, which gives the batch none, each keeps its own)",
    ),
    (
        "ours",
        "5.3",
        "gRPC auto-batching through Apache RocketMQ's proxy, concurrent sends each answered and \
         received with its own id",
        |reason| reason.starts_with("every message received, some with another message's id"),
        "apache/rocketmq#9416, as above: the batches our producer gathers are batches to the \
         proxy too",
    ),
    (
        "ours",
        "4.",
        "creates a FIFO consumer group on every broker (mq group create --fifo)",
        |reason| reason.contains("did not keep consumeMessageOrderly"),
        "4.x brokers' subscription group configs have no consumeMessageOrderly (5.0 added it), \
         so no consumer group is FIFO there",
    ),
    (
        "java grpc",
        "4.",
        "push consumer of a FIFO group: a message group in order, one message at a time",
        // Served as concurrent, the group's messages come out of order, or in order by
        // chance but consumed side by side: which one is timing.
        |reason| reason.contains("consumed in the order") || reason.contains("consumed at once"),
        "4.x brokers keep no FIFO flag for a group (see the row above), so the proxy serves \
         the group as concurrent: its messages are consumed side by side, and may come out of \
         order",
    ),
    (
        "ours",
        "4.",
        "timer message comes at its time, a recalled one never",
        |reason| reason.contains("no recall handle"),
        "4.x brokers have no timer messages (5.0 added them) and answer no recall handle",
    ),
    (
        "ours",
        "4.",
        "gRPC timer message through our proxy (mq proxy) comes at its time, a recalled one never",
        |reason| reason.contains("no recall handle"),
        "4.x brokers have no timer messages: in front of them our proxy serves delivery times \
         with delay levels (--delay-levels-for-delivery), which have no recall",
    ),
    (
        "java 5.3",
        "4.",
        "timer message comes at its time, a recalled one never",
        |reason| reason.contains("no recall handle"),
        "4.x brokers have no timer messages (5.0 added them) and answer no recall handle",
    ),
    (
        "java 5.3",
        "4.",
        "lite pull consumer reads every message once",
        |reason| reason.contains("read 0 of"),
        "4.x brokers do not serve LITE_PULL_MESSAGE (361), which 5.x lite pull consumers send",
    ),
];

/// The Java 5.3 client's consumer check failed only for the messages of its batch.
fn only_batch_ids_missing(reason: &str) -> bool {
    let Some((_, missing)) = reason.split_once("missing [") else {
        return false;
    };
    let missing = missing.split(']').next().unwrap_or_default();
    !missing.is_empty() && missing.split(", ").all(|m| m.contains(" batch/"))
}

/// The explanation when `row` is a known upstream failure.
fn known_upstream(row: &Row) -> Option<&'static str> {
    if row.ok {
        return None;
    }
    KNOWN_UPSTREAM
        .iter()
        .find(|(client, server, scenario, test, _)| {
            row.client == *client
                && row.server.starts_with(server)
                && row.scenario == *scenario
                && test(&row.reason)
        })
        .map(|k| k.4)
}

/// One cell of the matrix.
struct Row {
    client: String,
    server: String,
    scenario: String,
    ok: bool,
    reason: String,
}

impl Row {
    fn tsv(&self) -> String {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        format!(
            "{}\t{}\t{}\t{}\t{}\n",
            clean(&self.client),
            clean(&self.server),
            clean(&self.scenario),
            u8::from(self.ok),
            clean(&self.reason)
        )
    }

    fn parse(line: &str) -> Option<Self> {
        let mut f = line.splitn(5, '\t');
        Some(Self {
            client: f.next()?.to_owned(),
            server: f.next()?.to_owned(),
            scenario: f.next()?.to_owned(),
            ok: f.next()? == "1",
            reason: f.next().unwrap_or_default().to_owned(),
        })
    }
}

/// `cargo xtask interop [SERVER…]`.
pub(crate) fn interop(args: &[String]) -> Result {
    let servers: Vec<&str> = if args.is_empty() {
        SERVERS.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for s in &servers {
        if !SERVERS.contains(s) {
            return Err(format!("unknown server {s}; known: {SERVERS:?}"));
        }
    }
    build_debug(&["mq-cli", "mq-interop-client"], &[])?;
    let mq = target_dir().join("debug/mq");
    build_clients()?;
    let mut rows = Vec::new();
    let mut broken = Vec::new();
    for server in &servers {
        let (work, status) = run_in_netns("interop-netns", server, &mq)?;
        let found: Vec<Row> = fs::read_to_string(work.join("rows.tsv"))
            .unwrap_or_default()
            .lines()
            .filter_map(Row::parse)
            .collect();
        if found.is_empty() {
            rows.push(Row {
                client: "-".into(),
                server: (*server).into(),
                scenario: "the server starts".into(),
                ok: false,
                reason: format!("{status}; logs in {}", work.display()),
            });
        }
        // The namespace side fails on any failed row; only ours count here.
        let failed = found.is_empty() || found.iter().any(|r| !r.ok && known_upstream(r).is_none());
        if !status.success() && !failed {
            eprintln!("interop {server}: only known upstream failures");
        }
        rows.extend(found);
        if failed {
            broken.push(format!("{server} (logs kept in {})", work.display()));
        } else {
            let _ = fs::remove_dir_all(&work);
        }
    }
    if servers.len() == SERVERS.len() {
        let doc = root().join("docs/compatibility.md");
        fs::write(&doc, matrix(&rows)).map_err(|e| format!("{}: {e}", doc.display()))?;
        eprintln!("interop: wrote {}", doc.display());
    }
    let passed = rows.iter().filter(|r| r.ok).count();
    let known = rows.iter().filter(|r| known_upstream(r).is_some()).count();
    for r in rows.iter().filter(|r| known_upstream(r).is_some()) {
        eprintln!(
            "interop {}: KNOWN {}: {} ({})",
            r.server,
            r.client,
            r.scenario,
            known_upstream(r).unwrap_or_default()
        );
    }
    // Known upstream failures are not ours: they count with the passes.
    println!(
        "interop: {} passed, {} failed",
        passed + known,
        rows.len() - passed - known
    );
    if broken.is_empty() {
        Ok(())
    } else {
        Err(format!("failures against: {}", broken.join(", ")))
    }
}

/// Runs this program's `task` for `server` in a fresh loopback-only network namespace, with the
/// engine's jars fetched (Java servers) and a fresh work dir; returns the dir and the exit.
fn run_in_netns(task: &str, server: &str, mq: &Path) -> Result<(PathBuf, ExitStatus)> {
    // Ours needs the 5.x engine's jars for Apache RocketMQ's proxy in front of it.
    let lib = match (server, task) {
        ("ours", "interop-netns") => fetch("5.3")?,
        ("ours", _) => PathBuf::new(),
        _ => fetch(server)?,
    };
    let work = std::env::temp_dir().join(format!("mq-{task}-{server}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    disk_has_room(&work)?;
    eprintln!(
        "{task} {server}: in a loopback-only network namespace, work dir {}",
        work.display()
    );
    let me = std::env::current_exe().map_err(|e| format!("cannot find xtask itself: {e}"))?;
    let status = Command::new("unshare")
        .args(["--net", "--"])
        .arg(&me)
        .args([task, server])
        .arg(&lib)
        .arg(&work)
        .arg(mq)
        .status()
        .map_err(|e| format!("cannot run unshare (util-linux): {e}"))?;
    Ok((work, status))
}

/// Fails when the disk holding `work` is 90% full or more: a Java broker then refuses every
/// write (SERVICE_NOT_AVAILABLE, "the broker's disk is full", `diskSpaceWarningLevelRatio`),
/// and every scenario would fail for that alone. Passes when `df` cannot tell.
fn disk_has_room(work: &Path) -> Result {
    let Ok(out) = Command::new("df").arg("-P").arg(work).output() else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let used = text
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|p| p.trim_end_matches('%').parse::<u32>().ok());
    match used {
        Some(pct) if pct >= 90 => Err(format!(
            "the disk of {} is {pct}% full: Java brokers refuse writes from 90% on; free space \
             first",
            work.display()
        )),
        _ => Ok(()),
    }
}

/// `docs/compatibility.md`: per client, scenarios × servers.
fn matrix(rows: &[Row]) -> String {
    let mut out = String::from(
        "# Compatibility matrix\n\n\
         Generated by `cargo xtask interop` (do not edit): every client against every server, each \
         server in a loopback-only network namespace. Servers: ours (`mq serve`), Apache RocketMQ \
         5.3.3 and 4.9.7 (Java name server and broker). Clients: ours, Apache RocketMQ's Java \
         `rocketmq-client` 4.5.1, 4.9.7 (request-reply, ACL signatures) and 5.3.3, Java's gRPC \
         `rocketmq-client-java` 5.0.8, Python's `rocketmq-python-client` 5.1.2, Node's \
         `rocketmq-client-nodejs` 1.0.8 and Go's `rocketmq-clients/golang/v5` 5.1.2 through our \
         proxy (`mq proxy`) in front of each server, and \
         `rocketmq-client-go/v2`; ours and Java's gRPC client also through Apache RocketMQ's \
         `rocketmq-proxy` 5.3.3 in front of ours and the 5.3 engine (which consumes with pop). \
         A cell is `pass`; \
         `known upstream` where the Java engine or client fails on its own, recognised by the \
         exact failure (the Java client against the Java server shows the same); `FAIL` with the \
         reason; `—` where the scenario does not apply (LZ4 and ZSTD bodies on 4.x; the ACL \
         rows, run against an ACL 1.0 broker beside ours and the 4.9 engine, not 5.3, the gRPC \
         ones through our proxy checking the same accounts; the TLS \
         rows, against a TLS-enforcing broker beside ours; the rows through Apache RocketMQ's \
         proxy on 4.x, which has no pop).\n",
    );
    let servers: Vec<&str> = SERVERS.to_vec();
    let label = |s: &str| match s {
        "ours" => "ours".to_owned(),
        v => format!("Java {v}"),
    };
    for client in CLIENTS {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.client == *client).collect();
        if mine.is_empty() {
            continue;
        }
        let _ = write!(out, "\n## Client: {client}\n\n| scenario |");
        for s in &servers {
            let _ = write!(out, " server: {} |", label(s));
        }
        out.push_str("\n| --- |");
        for _ in &servers {
            out.push_str(" --- |");
        }
        out.push('\n');
        let mut scenarios: Vec<&str> = Vec::new();
        for r in &mine {
            if !scenarios.contains(&r.scenario.as_str()) {
                scenarios.push(&r.scenario);
            }
        }
        for scenario in scenarios {
            let _ = write!(out, "| {scenario} |");
            for s in &servers {
                let cell = match mine
                    .iter()
                    .find(|r| r.scenario == scenario && r.server == *s)
                {
                    Some(r) if r.ok => "pass".to_owned(),
                    Some(r) if known_upstream(r).is_some() => {
                        format!("known upstream: {}", known_upstream(r).unwrap_or_default())
                    }
                    Some(r) => format!("FAIL: {}", r.reason.replace('|', "\\|")),
                    None => "—".to_owned(),
                };
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
    }
    let broken: Vec<&Row> = rows.iter().filter(|r| r.client == "-").collect();
    for r in broken {
        let _ = write!(out, "\nServer {} did not start: {}\n", r.server, r.reason);
    }
    out
}

/// Builds the official client programs.
fn build_clients() -> Result {
    let dir = root().join("interop");
    for java in [
        "client-java-4.5.1",
        "client-java-4.9",
        "client-java-5.3",
        "client-java-grpc",
    ] {
        let started = Instant::now();
        maven(&dir.join(java), &["compile"]).map_err(|e| format!("{e}: build {java}"))?;
        eprintln!(
            "interop: built {java} ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
    }
    // RocketMQ 5's Python gRPC client, in a virtual environment of its own (pip fetches it).
    let started = Instant::now();
    let python = dir.join("client-python");
    let venv = python.join("target/venv");
    if !venv.join("bin/python").exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        if !made.success() {
            return Err("python3 could not make a virtual environment".into());
        }
    }
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "-r"])
        .arg(python.join("requirements.txt"))
        .status()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !installed.success() {
        return Err("pip could not install client-python's requirements".into());
    }
    eprintln!(
        "interop: built client-python ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    // RocketMQ 5's Node.js gRPC client, installed by npm into its target directory.
    let started = Instant::now();
    let node = dir.join("client-node");
    let target = node.join("target");
    fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    fs::copy(node.join("package.json"), target.join("package.json"))
        .map_err(|e| format!("client-node/package.json: {e}"))?;
    let installed = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&target)
        .status()
        .map_err(|e| format!("cannot run npm: {e}"))?;
    if !installed.success() {
        return Err("npm could not install client-node's dependencies".into());
    }
    eprintln!(
        "interop: built client-node ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    // Go's remoting client and its gRPC client (the go command fetches their modules).
    for client in ["client-go", "client-go-grpc"] {
        let started = Instant::now();
        let status = Command::new("go")
            .args(["build", "-o", &format!("target/{client}"), "."])
            .current_dir(dir.join(client))
            .status()
            .map_err(|e| format!("cannot run go: {e}"))?;
        if !status.success() {
            return Err(format!("go could not build {client}"));
        }
        eprintln!(
            "interop: built {client} ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Runs Maven on `project`'s pom with `goals`, then copies its dependencies into
/// `project/target/lib`.
fn maven(project: &Path, goals: &[&str]) -> Result {
    let status = Command::new("mvn")
        .args(["-B", "-q", "-f"])
        .arg(project.join("pom.xml"))
        .args(goals)
        .arg("dependency:copy-dependencies")
        .arg(format!(
            "-DoutputDirectory={}",
            project.join("target/lib").display()
        ))
        .status()
        .map_err(|e| format!("cannot run mvn: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("mvn failed".into())
    }
}

/// The engine's jars, fetched by Maven into `interop/engine-V/target/lib`.
fn fetch(engine: &str) -> Result<PathBuf> {
    let dir = root().join(format!("interop/engine-{engine}"));
    let lib = dir.join("target/lib");
    let started = Instant::now();
    maven(&dir, &[]).map_err(|e| format!("{e}: fetch engine {engine}"))?;
    eprintln!(
        "interop {engine}: jars in {} ({:.1}s)",
        lib.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(lib)
}

/// How long a server has to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A server process, stopped when dropped: nothing outlives the run. It gets SIGTERM first, so
/// that it cleans up after itself (`mq serve` removes a temporary store, a JVM runs its shutdown
/// hooks), and SIGKILL only when it has not exited within [`STOP_LIMIT`].
pub(crate) struct Server {
    name: String,
    child: Child,
    out: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) && self.signal("TERM") {
            let deadline = Instant::now() + STOP_LIMIT;
            // Polling: a child's exit has no other signal to wait on with a limit.
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops `servers` together: all get SIGTERM at once, so their shutdowns overlap, then each is
/// dropped (waited for, killed past [`STOP_LIMIT`]).
pub(crate) fn stop_all(servers: Vec<Server>) {
    for server in &servers {
        server.signal("TERM");
    }
    drop(servers);
}

impl Server {
    /// Starts `command`, its output going to `work/NAME.out`.
    pub(crate) fn start(name: &str, command: &mut Command, work: &Path) -> Result<Self> {
        let out = work.join(format!("{}.out", name.replace(' ', "-")));
        let file = fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let err = file
            .try_clone()
            .map_err(|e| format!("{}: {e}", out.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start the {name}: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            out,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a `kill` name: INT, TERM…); whether it was delivered.
    fn signal(&self, signal: &str) -> bool {
        Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Sends `signal` (a `kill` name: INT, KILL…) and waits for the process to exit.
    pub(crate) fn stop(&mut self, signal: &str) -> Result {
        if !self.signal(signal) {
            return Err(format!("kill -{signal} {} failed", self.name));
        }
        self.child
            .wait()
            .map(drop)
            .map_err(|e| format!("waiting for the {}: {e}", self.name))
    }

    /// What the server has printed so far.
    pub(crate) fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits for `line` in the server's output, or its exit, or the boot limit.
    pub(crate) fn wait_for(&mut self, line: &str) -> Result {
        let deadline = Instant::now() + BOOT_LIMIT;
        loop {
            if self.output().contains(line) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the {} exited ({status}) before \"{line}\"; see {}",
                    self.name,
                    self.out.display()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the {} printed no \"{line}\" within {BOOT_LIMIT:?}; see {}",
                    self.name,
                    self.out.display()
                ));
            }
            // Polling another process's log file: there is no signal to wait on. Fine enough
            // to time a start.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Inside the namespace: `interop-netns SERVER LIB WORK MQ`; writes the rows to
/// `WORK/rows.tsv`.
pub(crate) fn in_netns(args: &[String]) -> Result {
    let (server, work, mq, servers) = start_in_netns("interop-netns", args)?;
    eprintln!("interop {server}: up");
    let mut rows = Vec::new();
    let mut record = |client: &str, scenario: &str, ok: bool, reason: &str| {
        eprintln!(
            "interop {server}: {} {client}: {scenario}{}",
            if ok { "PASS" } else { "FAIL" },
            if ok {
                String::new()
            } else {
                format!(": {reason}")
            }
        );
        rows.push(Row {
            client: client.into(),
            server: server.to_owned(),
            scenario: scenario.into(),
            ok,
            reason: reason.into(),
        });
    };
    // Our client.
    for s in OURS.iter().filter(|s| s.on_4x || !server.starts_with('4')) {
        let (ok, out) = mq_run(mq, s.args, work)?;
        let ok = ok && out.contains(s.expect);
        record("ours", s.name, ok, &last_line(&out));
    }
    // Against a broker with ACL 1.0 on: signed requests pass, unsigned ones are refused.
    if has_acl_broker(server) {
        let (access_key, secret_key) = ACL_ACCOUNT;
        let send = ["send", "--topic", "AclTopic", "--body", "signed"];
        let mut signed = send.to_vec();
        signed.extend(["--access-key", access_key, "--secret-key", secret_key]);
        let (ok, out) = mq_run_at(mq, &signed, ACL_NAMESRV, work)?;
        let ok = ok && out.contains("SEND_OK");
        record(
            "ours",
            "ACL broker takes signed sends",
            ok,
            &last_line(&out),
        );
        let (ok, out) = mq_run_at(mq, &send, ACL_NAMESRV, work)?;
        let reason = if ok {
            format!("an unsigned send was stored: {}", last_line(&out))
        } else {
            String::new()
        };
        record("ours", "ACL broker refuses unsigned sends", !ok, &reason);
    }
    // Against a broker that enforces TLS: TLS sends pass, plain ones are refused.
    if has_tls_broker(server) {
        let cert = work.join(TLS_CERT);
        let cert = cert.to_string_lossy();
        let send = ["send", "--topic", "TlsTopic", "--body", "over tls"];
        let mut over_tls = send.to_vec();
        over_tls.extend(["--tls-ca", &cert]);
        let (ok, out) = mq_run_at(mq, &over_tls, TLS_NAMESRV, work)?;
        let ok = ok && out.contains("SEND_OK");
        record("ours", "TLS broker takes TLS sends", ok, &last_line(&out));
        let (ok, out) = mq_run_at(mq, &send, TLS_NAMESRV, work)?;
        let reason = if ok {
            format!("a plain send was stored: {}", last_line(&out))
        } else {
            String::new()
        };
        record("ours", "TLS broker refuses plain sends", !ok, &reason);
    }
    // RocketMQ 5's gRPC clients reach every cluster through our proxy; in front of 4.x
    // brokers, which have no timer, delivery times are served with delay levels.
    let proxy_args = |namesrv: &'static str, port: &str| {
        let mut c = Command::new(mq);
        c.args(["proxy", "--namesrv", namesrv, "--port", port]);
        if server.starts_with('4') {
            c.arg("--delay-levels-for-delivery");
        }
        c
    };
    let mut proxy = Server::start("mq proxy", &mut proxy_args(NAMESRV, "8081"), work)?;
    proxy.wait_for("gRPC proxy listening on")?;
    let (cert, key) = tls_files(work)?;
    let tls_port = GRPC_TLS_ENDPOINT
        .rsplit_once(':')
        .map_or("8083", |(_, p)| p);
    let mut tls_proxy = Server::start(
        "mq proxy with TLS enforced",
        proxy_args(NAMESRV, tls_port)
            .args(["--tls-mode", "enforcing", "--tls-cert"])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key),
        work,
    )?;
    tls_proxy.wait_for("gRPC proxy listening on")?;
    // Where an ACL broker runs, a proxy that checks ACL in front of it.
    let _acl_proxy = if has_acl_broker(server) {
        let acl_file = work.join("plain_acl.yml");
        fs::write(&acl_file, plain_acl_yml()).map_err(|e| format!("plain_acl.yml: {e}"))?;
        let port = GRPC_ACL_ENDPOINT
            .rsplit_once(':')
            .map_or("8084", |(_, p)| p);
        let (access_key, secret_key) = ACL_ACCOUNT;
        let mut acl_proxy = Server::start(
            "mq proxy with ACL",
            proxy_args(ACL_NAMESRV, port)
                .arg("--acl")
                .arg(&acl_file)
                .args(["--access-key", access_key, "--secret-key", secret_key])
                .args(["--tls-mode", "permissive", "--tls-cert"])
                .arg(&cert)
                .arg("--tls-key")
                .arg(&key),
            work,
        )?;
        acl_proxy.wait_for("gRPC proxy listening on")?;
        Some(acl_proxy)
    } else {
        None
    };
    // The Java gRPC client's FIFO push consumer needs its group to consume in order: a
    // subscription group config on every broker, made with our admin command.
    let fifo = ["group", "create", "--group", "GrpcFifoGroup", "--fifo"];
    let (ok, out) = mq_run_at(mq, &fifo, NAMESRV, work)?;
    record(
        "ours",
        "creates a FIFO consumer group on every broker (mq group create --fifo)",
        ok && out.contains("FIFO"),
        &last_line(&out),
    );
    // Apache RocketMQ's proxy checks each send against its topic's message type (a topic
    // without one takes normal messages only): the Java gRPC client's topics through it are
    // made with theirs, and its FIFO group, all named with JAVA_PROXY_SUFFIX.
    if has_java_proxy(server) {
        let mut made = Vec::new();
        let mut all_ok = true;
        for (topic, kind) in [
            ("GrpcNormal", "normal"),
            ("GrpcSimple", "normal"),
            ("GrpcPush", "normal"),
            ("GrpcFifo", "fifo"),
            ("GrpcFifoOrder", "fifo"),
            ("GrpcDelay", "delay"),
            ("GrpcTx", "transaction"),
        ] {
            let topic = format!("{topic}{JAVA_PROXY_SUFFIX}");
            let args = ["topic", "create", "--topic", &topic, "--message-type", kind];
            let (ok, out) = mq_run_at(mq, &args, NAMESRV, work)?;
            all_ok &= ok && out.contains(&kind.to_uppercase());
            made.push(last_line(&out));
        }
        let group = format!("GrpcFifoGroup{JAVA_PROXY_SUFFIX}");
        let (ok, out) = mq_run_at(
            mq,
            &["group", "create", "--group", &group, "--fifo"],
            NAMESRV,
            work,
        )?;
        all_ok &= ok && out.contains("FIFO");
        made.push(last_line(&out));
        record(
            "ours",
            "creates topics with RocketMQ 5 message types (mq topic create --message-type)",
            all_ok,
            &made.join("; "),
        );
    }
    // The official clients, each scenario a row.
    let dir = root().join("interop");
    let mut ours = Command::new(mq.with_file_name("mq-interop-client"));
    ours.arg(NAMESRV).env("HOME", work);
    // Our gRPC clients through our proxy, and through Apache RocketMQ's where it runs.
    ours.args([
        "--grpc-redelivery",
        &format!("our proxy (mq proxy)={GRPC_ENDPOINT}"),
    ]);
    if has_java_proxy(server) {
        ours.args([
            "--grpc-redelivery",
            &format!("Apache RocketMQ's proxy={JAVA_PROXY_ENDPOINT}"),
        ]);
    }
    let mut programs = vec![
        ("ours", ours),
        (
            "java 4.5.1",
            java(
                &dir,
                "client-java-4.5.1",
                "interop.Client451",
                work,
                &[NAMESRV, NO_ROUTE_NAMESRV],
            ),
        ),
        // Request-reply (4.5.1 predates it and 5.3's `request()` is broken upstream), and
        // `AclClientRPCHook`'s signatures where an ACL broker runs.
        (
            "java 4.9",
            java(
                &dir,
                "client-java-4.9",
                "interop.Client49",
                work,
                &java49_args(server),
            ),
        ),
        (
            "java 5.3",
            java(
                &dir,
                "client-java-5.3",
                "interop.Client53",
                work,
                &[NAMESRV],
            ),
        ),
        ("java grpc", java_grpc(&dir, work, &[GRPC_ENDPOINT])),
        (
            "java grpc",
            java_grpc(&dir, work, &["tls", GRPC_TLS_ENDPOINT]),
        ),
        ("python grpc", python(&dir, work, &[GRPC_ENDPOINT])),
        (
            "python grpc",
            trusting(python(&dir, work, &["tls", GRPC_TLS_ENDPOINT]), &cert),
        ),
        ("node grpc", node(&dir, work, &[GRPC_ENDPOINT])),
        (
            "node grpc",
            trusting(node(&dir, work, &["tls", GRPC_TLS_ENDPOINT]), &cert),
        ),
        // Go's gRPC client as configured by default: TLS on, any certificate taken.
        ("go grpc", go_grpc(&dir, work, &[GRPC_TLS_ENDPOINT])),
        ("go", go(&dir, work, &[NAMESRV])),
    ];
    if has_java_proxy(server) {
        let via = [
            "via",
            "through Apache RocketMQ's proxy",
            JAVA_PROXY_SUFFIX,
            JAVA_PROXY_ENDPOINT,
        ];
        programs.push(("java grpc", java_grpc(&dir, work, &via)));
    }
    if has_acl_broker(server) {
        let acl = ["acl", GRPC_ACL_ENDPOINT, ACL_ACCOUNT.0, ACL_ACCOUNT.1];
        programs.push(("java grpc", java_grpc(&dir, work, &acl)));
        programs.push(("python grpc", python(&dir, work, &acl)));
        programs.push(("node grpc", node(&dir, work, &acl)));
        programs.push(("go grpc", go_grpc(&dir, work, &acl)));
    }
    for (client, mut command) in programs {
        for (scenario, ok, reason) in run_program(client, &mut command, work)? {
            record(client, &scenario, ok, &reason);
        }
    }
    // Across clients: Java produces, we consume.
    let topic = "CrossFromJava";
    let count = CROSS.to_string();
    let mut produce = java(
        &dir,
        "client-java-5.3",
        "interop.Client53",
        work,
        &["produce", NAMESRV, topic, &count],
    );
    let produced = run_program("java 5.3 producer", &mut produce, work)?;
    let scenario = "consumes what Java 5.3 produced";
    match produced.iter().find(|(_, ok, _)| !ok) {
        Some((_, _, reason)) => record(
            "ours",
            scenario,
            false,
            &format!("Java 5.3 could not produce: {reason}"),
        ),
        None => {
            let (ok, reason) = mq_consume(mq, topic, work)?;
            record("ours", scenario, ok, &reason);
        }
    }
    // The Java gRPC client produces through the proxy; we consume over remoting.
    let topic = "CrossFromGrpc";
    let mut produce = java_grpc(&dir, work, &["produce", GRPC_ENDPOINT, topic, &count]);
    let produced = run_program("java grpc producer", &mut produce, work)?;
    let scenario = "consumes what the Java gRPC client produced";
    match produced.iter().find(|(_, ok, _)| !ok) {
        Some((_, _, reason)) => record(
            "ours",
            scenario,
            false,
            &format!("the Java gRPC client could not produce: {reason}"),
        ),
        None => {
            let (ok, reason) = mq_consume(mq, topic, work)?;
            record("ours", scenario, ok, &reason);
        }
    }
    // We produce; Java and Go consume.
    let topic = "CrossFromRust";
    let send_args = [
        "send",
        "--topic",
        topic,
        "--tag",
        "cross",
        "--body",
        "cross message",
        "--count",
        &count,
    ];
    let (sent, out) = mq_run(mq, &send_args, work)?;
    let scenario = "consumes what we produced";
    let consumers = [
        (
            "java 5.3",
            java(
                &dir,
                "client-java-5.3",
                "interop.Client53",
                work,
                &["consume", NAMESRV, topic, &count, "crossjava"],
            ),
        ),
        (
            "go",
            go(&dir, work, &["consume", NAMESRV, topic, &count, "crossgo"]),
        ),
    ];
    for (client, mut command) in consumers {
        if !sent {
            record(
                client,
                scenario,
                false,
                &format!("mq send failed: {}", last_line(&out)),
            );
            continue;
        }
        let got = run_program(client, &mut command, work)?;
        let failure = got.iter().find(|(_, ok, _)| !ok).map(|(_, _, r)| r.clone());
        record(
            client,
            scenario,
            failure.is_none(),
            &failure.unwrap_or_default(),
        );
    }
    let tsv: String = rows.iter().map(Row::tsv).collect();
    fs::write(work.join("rows.tsv"), tsv).map_err(|e| e.to_string())?;
    stop_all(servers);
    if rows.iter().all(|r| r.ok) {
        Ok(())
    } else {
        Err(format!("failures against {server}"))
    }
}

/// Inside a fresh namespace (`TASK SERVER LIB WORK MQ`): brings `lo` up, starts the server and
/// waits for its route; returns the server's name, the work dir, the `mq` binary and the
/// running processes (stopped when dropped).
fn start_in_netns<'a>(
    task: &str,
    args: &'a [String],
) -> Result<(&'a str, &'a Path, &'a Path, Vec<Server>)> {
    let [server, lib, work, mq] = args else {
        return Err(format!("usage: {task} SERVER LIB WORK MQ"));
    };
    let (lib, work, mq) = (Path::new(lib), Path::new(work), Path::new(mq));
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if !up.success() {
        return Err("cannot bring lo up in the namespace".into());
    }
    let mut servers = if server == "ours" {
        start_ours(mq, work)?
    } else {
        start_engine(server, lib, work)?
    };
    // The proxy creates its system topics on the cluster as it starts: only once the name
    // server knows the broker.
    wait_for_route(mq)?;
    // In front of the 5.x engine's broker, and in front of ours for the interop run: Apache
    // RocketMQ's proxy consumes with pop.
    if has_java_proxy(server) && (server != "ours" || task == "interop-netns") {
        servers.push(start_java_proxy(lib, work)?);
    }
    Ok((server, work, mq, servers))
}

/// Starts `mq serve`, and beside it one without auto-creation (the no-route name server).
fn start_ours(mq: &Path, work: &Path) -> Result<Vec<Server>> {
    // Each store in `work`, which the run removes, even if a server has to be killed.
    let serve = |name: &str| {
        let mut c = Command::new(mq);
        c.arg("serve")
            .arg("--store-dir")
            .arg(work.join(format!("store-{name}")));
        c
    };
    let mut main = Server::start("mq serve", &mut serve("broker-a"), work)?;
    main.wait_for("broker listening on")?;
    let mut strict = Server::start(
        "mq serve without auto-create",
        serve("broker-x").args([
            "--namesrv-port",
            "9877",
            "--broker-port",
            "10921",
            "--broker-name",
            "broker-x",
            "--auto-create-topic",
            "false",
        ]),
        work,
    )?;
    strict.wait_for("broker listening on")?;
    let acl_file = work.join("plain_acl.yml");
    fs::write(&acl_file, plain_acl_yml()).map_err(|e| format!("plain_acl.yml: {e}"))?;
    let mut acl = Server::start(
        "mq serve with ACL",
        serve("broker-acl")
            .args([
                "--namesrv-port",
                "9878",
                "--broker-port",
                "10931",
                "--broker-name",
                "broker-acl",
                "--acl",
            ])
            .arg(&acl_file),
        work,
    )?;
    acl.wait_for("broker listening on")?;
    let (cert, key) = tls_files(work)?;
    let mut tls = Server::start(
        "mq serve with TLS enforced",
        serve("broker-tls")
            .args([
                "--namesrv-port",
                "9879",
                "--broker-port",
                "10941",
                "--broker-name",
                "broker-tls",
                "--tls-mode",
                "enforcing",
                "--tls-cert",
            ])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key),
        work,
    )?;
    tls.wait_for("broker listening on")?;
    Ok(vec![main, strict, acl, tls])
}

/// The run's certificate ([`TLS_CERT`], self-signed for 127.0.0.1) and key in `work`, made on
/// first use.
fn tls_files(work: &Path) -> Result<(PathBuf, PathBuf)> {
    let (cert, key) = (work.join(TLS_CERT), work.join("tls-key.pem"));
    if !cert.exists() || !key.exists() {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .map_err(|e| format!("cannot make a certificate: {e}"))?;
        fs::write(&cert, certified.cert.pem()).map_err(|e| format!("{TLS_CERT}: {e}"))?;
        fs::write(&key, certified.key_pair.serialize_pem()).map_err(|e| format!("key: {e}"))?;
    }
    Ok((cert, key))
}

/// Starts the Java name server and broker, and a bare Java name server (the no-route one).
fn start_engine(engine: &str, lib: &Path, work: &Path) -> Result<Vec<Server>> {
    let is_4x = engine.starts_with('4');
    let home = work.join("home");
    fs::create_dir_all(home.join("conf")).map_err(|e| e.to_string())?;
    let store = work.join("store");
    let write = |name: &str, text: String| {
        fs::write(work.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write(
        "namesrv.conf",
        "listenPort=9876\nbindAddress=127.0.0.1\n".into(),
    )?;
    write(
        "bare-namesrv.conf",
        "listenPort=9877\nbindAddress=127.0.0.1\n".into(),
    )?;
    write(
        "acl-namesrv.conf",
        "listenPort=9878\nbindAddress=127.0.0.1\n".into(),
    )?;
    // Checks every second, 60 of them (not 15): Apache RocketMQ's proxy tells the broker of a
    // gRPC transactional producer only with its heartbeat every 20 s, so 15 checks could
    // end before the broker knows whom to ask, and the half message was dropped.
    let broker_conf = |name: &str, port: u16, namesrv: &str, store: &Path, extra: &str| {
        format!(
            "brokerClusterName=DefaultCluster\nbrokerName={name}\nbrokerId=0\n\
             brokerRole=ASYNC_MASTER\nflushDiskType=ASYNC_FLUSH\nlistenPort={port}\n\
             brokerIP1=127.0.0.1\nbindAddress=127.0.0.1\nnamesrvAddr={namesrv}\n\
             autoCreateTopicEnable=true\nstorePathRootDir={store}\n\
             storePathCommitLog={store}/commitlog\nmappedFileSizeCommitLog=67108864\n\
             mapedFileSizeCommitLog=67108864\nmappedFileSizeConsumeQueue=600000\n\
             maxIndexNum=100000\nmaxHashSlotNum=10000\n\
             transactionTimeOut=1000\ntransactionCheckInterval=1000\n\
             transactionCheckMax=60\nrecallMessageEnable=true\n{extra}",
            store = store.display()
        )
    };
    write(
        "broker.conf",
        broker_conf("broker-a", 10911, NAMESRV, &store, ""),
    )?;
    // ACL 1.0: the broker reads $ROCKETMQ_HOME/conf/plain_acl.yml.
    write(
        "acl-broker.conf",
        broker_conf(
            "broker-acl",
            10931,
            ACL_NAMESRV,
            &work.join("store-acl"),
            "aclEnable=true\n",
        ),
    )?;
    fs::write(home.join("conf").join("plain_acl.yml"), plain_acl_yml())
        .map_err(|e| format!("plain_acl.yml: {e}"))?;
    if is_4x {
        // 4.x reads its logback file from $ROCKETMQ_HOME/conf and exits without one.
        let logback = "<configuration>\n  <appender name=\"STDOUT\" \
                       class=\"ch.qos.logback.core.ConsoleAppender\">\n    <encoder>\
                       <pattern>%d %p %c{0} - %m%n</pattern></encoder>\n  </appender>\n  \
                       <root level=\"WARN\"><appender-ref ref=\"STDOUT\"/></root>\n\
                       </configuration>\n";
        for name in ["logback_namesrv.xml", "logback_broker.xml"] {
            fs::write(home.join("conf").join(name), logback).map_err(|e| e.to_string())?;
        }
    }
    let java = |class: &str, conf: &str, logback: &str, user: &str| {
        let mut c = java_command(work);
        // 5.3's timer wheel (which pop consumption needs for its redelivery) takes direct
        // buffers beyond the 256 MB that -Xmx would allow them; the broker then fails pops and
        // scheduled deliveries with OutOfMemoryError.
        c.args([
            "-Xms256m",
            "-Xmx256m",
            "-XX:MaxDirectMemorySize=1g",
            "-XX:+UseG1GC",
        ])
        .arg(format!("-Duser.home={}", work.join(user).display()))
        .arg(format!("-Drocketmq.home.dir={}", home.display()));
        if is_4x {
            // 4.x unmaps files through internals JDK 17 hides.
            c.args([
                "--add-opens",
                "java.base/java.nio=ALL-UNNAMED",
                "--add-exports",
                "java.base/jdk.internal.ref=ALL-UNNAMED",
            ]);
        } else {
            c.arg(format!("-Drmq.logback.configurationFile={logback}"));
        }
        c.arg("-cp")
            .arg(format!("{}/*", lib.display()))
            .arg(class)
            .arg("-c")
            .arg(work.join(conf));
        c
    };
    let namesrv_class = "org.apache.rocketmq.namesrv.NamesrvStartup";
    let namesrv_log = "rmq.namesrv.logback.xml";
    let mut namesrv = Server::start(
        "name server",
        &mut java(namesrv_class, "namesrv.conf", namesrv_log, "user"),
        work,
    )?;
    let mut bare = Server::start(
        "bare name server",
        &mut java(namesrv_class, "bare-namesrv.conf", namesrv_log, "user-bare"),
        work,
    )?;
    namesrv.wait_for("The Name Server boot success")?;
    bare.wait_for("The Name Server boot success")?;
    let mut broker = Server::start(
        "broker",
        &mut java(
            "org.apache.rocketmq.broker.BrokerStartup",
            "broker.conf",
            "rmq.broker.logback.xml",
            "user",
        ),
        work,
    )?;
    broker.wait_for("boot success")?;
    if !is_4x {
        // Its gRPC proxy is started once the broker has registered (see `start_in_netns`).
        return Ok(vec![namesrv, bare, broker]);
    }
    let mut acl_namesrv = Server::start(
        "ACL name server",
        &mut java(namesrv_class, "acl-namesrv.conf", namesrv_log, "user-acl"),
        work,
    )?;
    acl_namesrv.wait_for("The Name Server boot success")?;
    let mut acl_broker = Server::start(
        "ACL broker",
        &mut java(
            "org.apache.rocketmq.broker.BrokerStartup",
            "acl-broker.conf",
            "rmq.broker.logback.xml",
            "user-acl",
        ),
        work,
    )?;
    acl_broker.wait_for("boot success")?;
    Ok(vec![namesrv, bare, broker, acl_namesrv, acl_broker])
}

/// Starts Apache RocketMQ's gRPC proxy (`rocketmq-proxy`, cluster mode, from the 5.x engine's
/// jars in `lib`) at [`JAVA_PROXY_ENDPOINT`], in front of the cluster at [`NAMESRV`].
fn start_java_proxy(lib: &Path, work: &Path) -> Result<Server> {
    let home = work.join("home");
    fs::create_dir_all(home.join("conf")).map_err(|e| e.to_string())?;
    let (_, port) = JAVA_PROXY_ENDPOINT
        .rsplit_once(':')
        .ok_or("JAVA_PROXY_ENDPOINT has no port")?;
    let conf = work.join("rmq-proxy.json");
    fs::write(
        &conf,
        format!(
            "{{\"rocketMQClusterName\":\"DefaultCluster\",\"namesrvAddr\":\"{NAMESRV}\",\
             \"grpcServerPort\":{port},\"remotingListenPort\":8180,\"proxyMode\":\"cluster\"}}"
        ),
    )
    .map_err(|e| format!("rmq-proxy.json: {e}"))?;
    // The proxy creates its system topics on the cluster as it starts, and gives up when the
    // name server does not list the broker yet. Callers start it once the name server routes
    // TBW102; should it still give up creating them, it is started again, up to three times
    // in all.
    let mut attempt = 1;
    loop {
        let mut c = java_command(work);
        c.args(["-Xms256m", "-Xmx256m", "-XX:+UseG1GC"])
            .arg(format!("-Duser.home={}", work.join("user-proxy").display()))
            .arg(format!("-Drocketmq.home.dir={}", home.display()))
            .arg("-cp")
            .arg(format!("{}/*", lib.display()))
            .arg("org.apache.rocketmq.proxy.ProxyStartup")
            .arg("-pc")
            .arg(&conf)
            .args(["-pm", "cluster"]);
        let mut proxy = Server::start("Java gRPC proxy", &mut c, work)?;
        match proxy.wait_for("rocketmq-proxy startup successfully") {
            Ok(()) => return Ok(proxy),
            Err(e) if attempt < 3 && proxy.output().contains("create system") => {
                // Started again at once: a JVM's start takes seconds of its own, and the
                // broker's registration, which the caller waited for, is not what it waits on.
                eprintln!("interop: the Java gRPC proxy did not start ({e}); again");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `java`, with its temporary files (Netty's self-signed certificates, for one) in `work`,
/// which the run removes, rather than in `/tmp`, where a killed JVM would leave them.
fn java_command(work: &Path) -> Command {
    let tmp = work.join("java-tmp");
    // A JVM whose temporary directory is missing fails only when it makes a file: say why here.
    if let Err(e) = fs::create_dir_all(&tmp) {
        eprintln!("interop: cannot make {}: {e}", tmp.display());
    }
    let mut c = Command::new("java");
    c.arg(format!("-Djava.io.tmpdir={}", tmp.display()));
    c
}

/// RocketMQ 5's Java gRPC client program (`interop/client-java-grpc`) with `args`.
fn java_grpc(dir: &Path, work: &Path, args: &[&str]) -> Command {
    java(dir, "client-java-grpc", "interop.ClientGrpc", work, args)
}

/// A Java client program of `interop/CLIENT` with `args`.
fn java(dir: &Path, client: &str, class: &str, work: &Path, args: &[&str]) -> Command {
    let home = dir.join(client);
    let mut c = java_command(work);
    c.args([
        // Netty of 4.5.1's era reaches into JDK internals.
        "--add-opens",
        "java.base/java.nio=ALL-UNNAMED",
        "--add-opens",
        "java.base/sun.nio.ch=ALL-UNNAMED",
        "--add-opens",
        "java.base/java.lang=ALL-UNNAMED",
        // Without a name server, clients ask an address server: point it at nothing.
        "-Drocketmq.namesrv.domain=127.0.0.1:1",
    ])
    .arg(format!("-Duser.home={}", work.display()))
    .arg("-cp")
    .arg(format!(
        "{}:{}/*",
        home.join("target/classes").display(),
        home.join("target/lib").display()
    ))
    .arg(class)
    .args(args);
    c
}

/// The Python gRPC client program with `args`, in its virtual environment.
fn python(dir: &Path, work: &Path, args: &[&str]) -> Command {
    let home = dir.join("client-python");
    let mut c = Command::new(home.join("target/venv/bin/python"));
    c.arg(home.join("client.py")).args(args).env("HOME", work);
    c
}

/// The Node.js gRPC client program with `args`, with the modules npm installed.
fn node(dir: &Path, work: &Path, args: &[&str]) -> Command {
    let home = dir.join("client-node");
    let mut c = Command::new("node");
    c.arg(home.join("client.js"))
        .args(args)
        .env("NODE_PATH", home.join("target/node_modules"))
        .env("HOME", work);
    c
}

/// `command` (a gRPC client on gRPC's C core or grpc-js, which trust the system's roots) trusting
/// the roots in `cert` instead.
fn trusting(mut command: Command, cert: &Path) -> Command {
    command.env("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", cert);
    command
}

/// The Go client program with `args`.
/// RocketMQ 5's Go gRPC client program (`interop/client-go-grpc`) with `args`; its log goes
/// under the work directory.
fn go_grpc(dir: &Path, work: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(dir.join("client-go-grpc/target/client-go-grpc"));
    c.args(args)
        .env("rocketmq.client.logRoot", work.join("go-grpc-logs"))
        .env("HOME", work);
    c
}

fn go(dir: &Path, work: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(dir.join("client-go/target/client-go"));
    c.args(args)
        .env("ROCKETMQ_GO_LOG_LEVEL", "error")
        .env("HOME", work);
    c
}

/// Runs a client program; its `PASS name` / `FAIL name<TAB>reason` lines are the scenarios
/// (the gRPC programs' names hold `": "`); a FAIL line without a tab is `FAIL name: reason`, a
/// name without `": "`. A program that printed no verdict at all (crashed, timed out) is one
/// failed scenario.
fn run_program(
    client: &str,
    command: &mut Command,
    work: &Path,
) -> Result<Vec<(String, bool, String)>> {
    let log = unique_log(work, client);
    let (ok, output) = run_bounded(command, CLIENT_LIMIT, &log)?;
    let mut found: Vec<(String, bool, String)> = output
        .lines()
        .filter_map(|l| {
            if let Some(name) = l.strip_prefix("PASS ") {
                Some((name.to_owned(), true, String::new()))
            } else {
                let rest = l.strip_prefix("FAIL ")?;
                let (name, reason) = rest
                    .split_once('\t')
                    .or_else(|| rest.split_once(": "))
                    .unwrap_or((rest, ""));
                Some((name.to_owned(), false, reason.to_owned()))
            }
        })
        .collect();
    if found.is_empty() || (!ok && found.iter().all(|(_, ok, _)| *ok)) {
        found.push((
            "the program runs to the end".into(),
            false,
            format!("{}; see {}", last_line(&output), log.display()),
        ));
    }
    Ok(found)
}

/// `mq ARGS --namesrv NAMESRV`: whether it succeeded, and what it printed.
fn mq_run(mq: &Path, args: &[&str], work: &Path) -> Result<(bool, String)> {
    mq_run_at(mq, args, NAMESRV, work)
}

/// [`mq_run`] against the name servers `namesrv`.
fn mq_run_at(mq: &Path, args: &[&str], namesrv: &str, work: &Path) -> Result<(bool, String)> {
    let mut c = Command::new(mq);
    c.args(args).args(["--namesrv", namesrv]);
    run_bounded(&mut c, CLIENT_LIMIT, &unique_log(work, args[0]))
}

/// A fresh log file for one run of `name` (each run keeps its own).
fn unique_log(work: &Path, name: &str) -> PathBuf {
    let stem = name.replace(' ', "-");
    (1..)
        .map(|n| work.join(format!("{stem}-{n}.log")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| work.join(format!("{stem}.log")))
}

/// `mq consume` of the cross flow's topic: every "cross message I" must arrive.
fn mq_consume(mq: &Path, topic: &str, work: &Path) -> Result<(bool, String)> {
    let count = CROSS.to_string();
    let args = [
        "consume",
        "--topic",
        topic,
        "--group",
        "crossrust",
        "--from-first",
        "--count",
        &count,
        "--wait-secs",
        "30",
    ];
    let (ok, out) = mq_run(mq, &args, work)?;
    if !ok {
        return Ok((false, last_line(&out)));
    }
    let missing: Vec<usize> = (0..CROSS)
        .filter(|i| {
            !out.lines().any(|l| {
                l.contains(" tags cross ") && l.ends_with(&format!("body cross message {i}"))
            })
        })
        .collect();
    Ok(if missing.is_empty() {
        (true, String::new())
    } else {
        (false, format!("missing messages {missing:?}"))
    })
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .to_owned()
}

/// Runs `command` with its output in `log`, killing it after `limit`; returns whether it
/// succeeded and what it printed.
fn run_bounded(command: &mut Command, limit: Duration, log: &Path) -> Result<(bool, String)> {
    let file = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let deadline = Instant::now() + limit;
    let ok = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status.success();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        // Waiting on another process with a bound: std has no wait with a timeout.
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok((ok, fs::read_to_string(log).unwrap_or_default()))
}

/// Waits until the name server routes TBW102 (the broker has registered).
fn wait_for_route(mq: &Path) -> Result {
    let deadline = Instant::now() + BOOT_LIMIT;
    loop {
        let ok = Command::new(mq)
            .args([
                "route",
                "--topic",
                "TBW102",
                "--namesrv",
                NAMESRV,
                "--timeout",
                "1s",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("no route of TBW102 within {BOOT_LIMIT:?}"));
        }
        // The broker registers on its own schedule; nothing to wait on but the answer.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Seconds each side-by-side benchmark runs (the Java client warms up as long again first).
const BENCH_SECONDS: u64 = 5;

/// The side-by-side loads: (mode, tasks or threads, sends in flight each).
const BENCH_LOADS: &[(&str, u32, u32)] = &[("sync", 64, 1), ("async", 64, 16)];

/// The servers of the side-by-side row.
const BENCH_SERVERS: &[&str] = &["ours", "5.3"];

/// `cargo xtask interop-bench`: our client and the Java 5.3 client, sync and async, 1 KiB, on
/// our broker and on Java's, in one run; writes its section of `docs/performance.md`.
pub(crate) fn interop_bench(_args: &[String]) -> Result {
    cargo(&["build", "--locked", "--release", "-p", "mq-cli"], &[])?;
    let mq = target_dir().join("release/mq");
    build_clients()?;
    let mut rows = Vec::new();
    for server in BENCH_SERVERS {
        let (work, status) = run_in_netns("interop-bench-netns", server, &mq)?;
        if !status.success() {
            return Err(format!(
                "the benchmark against {server} failed; logs in {}",
                work.display()
            ));
        }
        rows.push((
            (*server).to_owned(),
            fs::read_to_string(work.join("bench.tsv")).map_err(|e| e.to_string())?,
        ));
        let _ = fs::remove_dir_all(&work);
    }
    let mut section = String::from(
        "## Side by side with the Java client (`cargo xtask interop-bench`)\n\n\
         Our client (`mq bench produce`, release build) and Apache RocketMQ's Java \
         `rocketmq-client` 5.3.3 (a program in the spirit of rocketmq-example's benchmark \
         `Producer`, which Maven Central does not carry: `interop/client-java-5.3`, mode `bench`, \
         after a warm-up as long as the run) send 1 KiB messages to the same broker, warmed up \
         first by an unrecorded run of each load, one after the other in one run, each for ",
    );
    let _ = write!(
        section,
        "{BENCH_SECONDS} s. Client CPU is each client process's own; broker CPU is the broker \
         process's over the same window. Read the ratios: the machine is shared and noisy.\n\n\
         | broker | load | ours msg/s | Java msg/s | ours / Java | ours client CPU µs/msg | \
         Java client CPU µs/msg | broker CPU µs/msg (ours client) | broker CPU µs/msg (Java \
         client) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    );
    for (server, tsv) in &rows {
        let label = if server == "ours" {
            "ours (`mq serve`)".to_owned()
        } else {
            format!("Java {server}")
        };
        let parsed: Vec<Vec<&str>> = tsv.lines().map(|l| l.split('\t').collect()).collect();
        for (mode, tasks, window) in BENCH_LOADS {
            let find = |client: &str| {
                parsed
                    .iter()
                    .find(|f| f.first() == Some(&client) && f.get(1) == Some(mode))
                    .map(|f| {
                        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
                        (num(2), num(3), num(4))
                    })
                    .unwrap_or((None, None, None))
            };
            let (ours_tps, ours_cpu, ours_broker) = find("ours");
            let (java_tps, java_cpu, java_broker) = find("java");
            let f = |v: Option<f64>, digits: usize| {
                v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
            };
            let ratio = ours_tps.zip(java_tps).map(|(o, j)| o / j.max(1e-9));
            let _ = writeln!(
                section,
                "| {label} | {mode} 1 KiB, {tasks} × {window} in flight | {} | {} | {} | {} | {} | {} | {} |",
                f(ours_tps, 0),
                f(java_tps, 0),
                f(ratio, 2),
                f(ours_cpu, 1),
                f(java_cpu, 1),
                f(ours_broker, 1),
                f(java_broker, 1),
            );
        }
    }
    let doc = root().join("docs/performance.md");
    let old = fs::read_to_string(&doc).unwrap_or_default();
    fs::write(&doc, with_section(&old, "interop-bench", &section))
        .map_err(|e| format!("{}: {e}", doc.display()))?;
    eprintln!("{section}");
    eprintln!("interop-bench: wrote its section of {}", doc.display());
    Ok(())
}

/// The sections of `docs/performance.md` that their own commands write (they need the Java
/// engine, or many GB of disk), so that `cargo xtask bench`, which regenerates the rest,
/// carries them over.
pub(crate) const OWN_SECTIONS: [&str; 2] = ["interop-bench", "store-bench"];

fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- {name}: begin -->"),
        format!("<!-- {name}: end -->"),
    )
}

/// `doc` with its `name` section replaced by `section` (appended when absent).
pub(crate) fn with_section(doc: &str, name: &str, section: &str) -> String {
    let (start, end) = markers(name);
    let block = format!("{start}\n{section}{end}\n");
    match (doc.find(&start), doc.find(&end)) {
        (Some(a), Some(b)) if b > a => {
            format!(
                "{}{block}{}",
                &doc[..a],
                &doc[b + end.len()..].trim_start_matches('\n')
            )
        }
        _ => format!("{}\n{block}", doc.trim_end()),
    }
}

/// The `name` section of `doc`, markers included, if any.
pub(crate) fn section_of<'d>(doc: &'d str, name: &str) -> Option<&'d str> {
    let (start, end) = markers(name);
    let a = doc.find(&start)?;
    let b = doc.find(&end)? + end.len();
    (b > a).then(|| &doc[a..b])
}

/// This process's or another's CPU time so far, from `/proc/PID/stat` (utime + stime, in
/// USER_HZ ticks of 10 ms).
fn cpu_of(pid: u32) -> Duration {
    let ticks = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let mut f = rest.split_whitespace().skip(11);
            let user: u64 = f.next()?.parse().ok()?;
            let system: u64 = f.next()?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Inside the namespace: `interop-bench-netns SERVER LIB WORK MQ`; writes `WORK/bench.tsv` with
/// `client mode msg/s client-cpu-µs/msg broker-cpu-µs/msg` rows.
pub(crate) fn bench_in_netns(args: &[String]) -> Result {
    let (server, work, mq, servers) = start_in_netns("interop-bench-netns", args)?;
    // The broker is the first `mq serve` for ours, the broker JVM for Java.
    let broker_pid = servers
        .iter()
        .find(|s| s.name == "mq serve" || s.name == "broker")
        .map(|s| s.child.id())
        .ok_or("no broker process")?;
    let dir = root().join("interop");
    let mut tsv = String::new();
    let secs = BENCH_SECONDS.to_string();
    // Our client: `mq bench produce --json`, whose last line carries msg/s and its CPU.
    let ours = |mode: &str, tasks: &str, window: &str, log: &str| {
        let mut c = Command::new(mq);
        c.args(["bench", "produce", "--namesrv", NAMESRV])
            .args(["--topic", "BenchSideBySide", "--mode", mode])
            .args(["--tasks", tasks, "--window", window])
            .args(["--size", "1024", "--duration", &secs, "--json"]);
        let (ok, out) = run_bounded(&mut c, CLIENT_LIMIT, &unique_log(work, log))?;
        let json = out
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or("{}");
        let json: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        Ok::<_, String>((ok, json))
    };
    // Warm the broker first (a Java broker's JIT would otherwise charge its warm-up to the
    // first client measured): one unrecorded run of each load.
    for (mode, tasks, window) in BENCH_LOADS {
        ours(
            mode,
            &tasks.to_string(),
            &window.to_string(),
            "bench-warm-up",
        )?;
    }
    for (mode, tasks, window) in BENCH_LOADS {
        let (tasks, window) = (tasks.to_string(), window.to_string());
        let broker_before = cpu_of(broker_pid);
        let (ok, json) = ours(mode, &tasks, &window, "bench-ours")?;
        let broker = cpu_of(broker_pid).saturating_sub(broker_before);
        let field = |name: &str| json[name].as_f64();
        if let (true, Some(tps), Some(cpu), Some(acked)) =
            (ok, field("tps"), field("cpu_us_per_msg"), field("ok"))
        {
            let per = broker.as_secs_f64() * 1e6 / acked.max(1.0);
            let _ = writeln!(tsv, "ours\t{mode}\t{tps:.1}\t{cpu:.2}\t{per:.2}");
        }
        // Java: the broker's CPU counts over the timed half only (after the warm-up).
        let mut c = java(
            &dir,
            "client-java-5.3",
            "interop.Client53",
            work,
            &[
                "bench",
                NAMESRV,
                "BenchSideBySide",
                mode,
                &tasks,
                &window,
                "1024",
                &secs,
            ],
        );
        let log = unique_log(work, "bench-java");
        let file = fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut child = c
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start java: {e}"))?;
        // The program measures from the end of its warm-up; sample the broker at the same
        // moments (the JVM's start is counted into the warm-up).
        std::thread::sleep(Duration::from_secs(BENCH_SECONDS + 1));
        let broker_before = cpu_of(broker_pid);
        let status = child.wait().map_err(|e| e.to_string())?;
        let broker = cpu_of(broker_pid).saturating_sub(broker_before);
        let out = fs::read_to_string(&log).unwrap_or_default();
        let line = out
            .lines()
            .rev()
            .find(|l| l.starts_with("bench "))
            .unwrap_or("");
        let kv = |name: &str| -> Option<f64> {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{name}=")))?
                .parse()
                .ok()
        };
        if let (true, Some(msgs), Some(seconds), Some(cpu_ns)) =
            (status.success(), kv("msgs"), kv("seconds"), kv("cpu_ns"))
        {
            let tps = msgs / seconds.max(1e-9);
            let cpu = cpu_ns / 1e3 / msgs.max(1.0);
            let per = broker.as_secs_f64() * 1e6 / msgs.max(1.0);
            let _ = writeln!(tsv, "java\t{mode}\t{tps:.1}\t{cpu:.2}\t{per:.2}");
        }
    }
    stop_all(servers);
    fs::write(work.join("bench.tsv"), &tsv).map_err(|e| e.to_string())?;
    eprintln!("interop-bench {server}:\n{tsv}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(client: &str, server: &str, scenario: &str, reason: &str) -> Row {
        Row {
            client: client.to_owned(),
            server: server.to_owned(),
            scenario: scenario.to_owned(),
            ok: false,
            reason: reason.to_owned(),
        }
    }

    const FIFO: &str =
        "push consumer of a FIFO group: a message group in order, one message at a time";

    #[test]
    fn a_concurrent_fifo_group_on_4x_is_known_whichever_way_it_shows() {
        // Both reasons as the Java gRPC client prints them (ClientGrpc.java).
        let out_of_order = "java.lang.AssertionError: consumed in the order [step 1, step 0], \
                            sent [step 0, step 1]";
        let side_by_side =
            "java.lang.AssertionError: 9 messages of the group were consumed at once";
        for reason in [out_of_order, side_by_side] {
            assert!(known_upstream(&failed("java grpc", "4.9", FIFO, reason)).is_some());
            // A 5.x broker keeps the flag: there the same failure is ours.
            assert!(known_upstream(&failed("java grpc", "5.3", FIFO, reason)).is_none());
        }
        let other = "java.lang.AssertionError: received twice";
        assert!(known_upstream(&failed("java grpc", "4.9", FIFO, other)).is_none());
    }

    #[test]
    fn batch_ids_known_only_when_every_missing_message_is_of_the_batch() {
        let scenario = "push consumer reads every message once";
        let batch = "read 6 of 16; missing [7F01 batch/key-batch-0, 7F02 batch/key-batch-3]; \
                     read but not sent {}";
        let more = "read 5 of 16; missing [7F01 batch/key-batch-0, 7F03 sync/key-sync-0]; \
                    read but not sent {}";
        assert!(known_upstream(&failed("java 5.3", "5.3", scenario, batch)).is_some());
        assert!(known_upstream(&failed("java 5.3", "5.3", scenario, more)).is_none());
    }
}
