//! `cargo xtask interop [TARGET…]`: the real engine against us, both ways.
//!
//! * `5.3`, `4.9`: our client against Apache RocketMQ's Java name server and broker, fetched
//!   from Maven Central by `interop/engine-*/pom.xml`. This program starts them, waits for their
//!   "boot success" lines and a route, runs every scenario with the `mq` binary, and stops them.
//! * `clients`: the official clients against `mq serve`: Java `rocketmq-client` 4.5.1 (the
//!   scenarios of its `DefaultMQProducerTest`) and 5.3 (producer, push and lite pull consumers),
//!   and the Go client (`interop/client-*`; Maven and the Go module proxy fetch them).
//!
//! Each target runs in a fresh network namespace that has only `lo` (`unshare --net`): 4.x binds
//! 0.0.0.0 and the HA port always does, and a client without a name server would ask an address
//! server, so nothing must be able to leave the machine.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, cargo, root};

/// What `cargo xtask interop` runs when no target is named: the Java engines (the newest 5.x
/// release line and the last 4.x one on Maven Central; 4.9.8 is not there), then the clients.
const TARGETS: &[&str] = &["5.3", "4.9", CLIENTS];

/// The target that runs the official clients against `mq serve`.
const CLIENTS: &str = "clients";

/// How long one official client program may run.
const CLIENT_LIMIT: Duration = Duration::from_secs(240);

const NAMESRV: &str = "127.0.0.1:9876";

/// How long a Java server may take to print its boot line.
const BOOT_LIMIT: Duration = Duration::from_secs(90);

/// One run of the `mq` tool against the engine, and what it must print.
struct Scenario {
    name: &'static str,
    args: &'static [&'static str],
    expect: &'static str,
    /// Whether 4.x can take it (LZ4 and ZSTD bodies are 5.x only).
    on_4x: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "cluster lists the Java broker",
        args: &["cluster"],
        expect: "broker-a",
        on_4x: true,
    },
    Scenario {
        name: "quickstart, JSON headers",
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

/// `cargo xtask interop [TARGET…]`.
pub(crate) fn interop(args: &[String]) -> Result {
    let targets: Vec<&str> = if args.is_empty() {
        TARGETS.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for target in &targets {
        if !TARGETS.contains(target) {
            return Err(format!("unknown target {target}; known: {TARGETS:?}"));
        }
    }
    cargo(&["build", "--locked", "-p", "mq-cli"], &[])?;
    let mq = root().join("target/debug/mq");
    let me = std::env::current_exe().map_err(|e| format!("cannot find xtask itself: {e}"))?;
    let mut failed = Vec::new();
    let (mut passed_total, mut failed_total) = (0u32, 0u32);
    for engine in targets {
        let lib = if engine == CLIENTS {
            build_clients()?
        } else {
            fetch(engine)?
        };
        let work = std::env::temp_dir().join(format!("mq-interop-{engine}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        eprintln!(
            "interop {engine}: in a loopback-only network namespace, work dir {}",
            work.display()
        );
        let status = Command::new("unshare")
            .args(["--net", "--"])
            .arg(&me)
            .args(["interop-netns", engine])
            .args([&lib, &work, &mq])
            .status()
            .map_err(|e| format!("cannot run unshare (util-linux): {e}"))?;
        // The namespace side writes `PASSED FAILED`; none when it could not start the engine.
        let counts = fs::read_to_string(work.join("counts")).unwrap_or_default();
        let mut counts = counts
            .split_whitespace()
            .map(|n| n.parse::<u32>().unwrap_or(0));
        passed_total += counts.next().unwrap_or(0);
        failed_total += counts.next().unwrap_or(1);
        if status.success() {
            let _ = fs::remove_dir_all(&work);
        } else {
            failed.push(format!("{engine} (logs kept in {})", work.display()));
        }
    }
    println!("interop: {passed_total} passed, {failed_total} failed");
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed against: {}", failed.join(", ")))
    }
}

/// Builds the official client programs; returns the `interop` directory they live in.
fn build_clients() -> Result<PathBuf> {
    let dir = root().join("interop");
    for java in ["client-java-4.5.1", "client-java-5.3"] {
        let started = Instant::now();
        let status = Command::new("mvn")
            .args(["-B", "-q", "-f"])
            .arg(dir.join(java).join("pom.xml"))
            .args(["compile", "dependency:copy-dependencies"])
            .arg(format!(
                "-DoutputDirectory={}",
                dir.join(java).join("target/lib").display()
            ))
            .status()
            .map_err(|e| format!("cannot run mvn: {e}"))?;
        if !status.success() {
            return Err(format!("mvn could not build {java}"));
        }
        eprintln!(
            "interop: built {java} ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
    }
    let started = Instant::now();
    let status = Command::new("go")
        .args(["build", "-o", "target/client-go", "."])
        .current_dir(dir.join("client-go"))
        .status()
        .map_err(|e| format!("cannot run go: {e}"))?;
    if !status.success() {
        return Err("go could not build client-go".into());
    }
    eprintln!(
        "interop: built client-go ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// The engine's jars, fetched by Maven into `interop/engine-V/target/lib`.
fn fetch(engine: &str) -> Result<PathBuf> {
    let dir = root().join(format!("interop/engine-{engine}"));
    let lib = dir.join("target/lib");
    let started = Instant::now();
    let status = Command::new("mvn")
        .args(["-B", "-q", "-f"])
        .arg(dir.join("pom.xml"))
        .arg("dependency:copy-dependencies")
        .arg(format!("-DoutputDirectory={}", lib.display()))
        .status()
        .map_err(|e| format!("cannot run mvn: {e}"))?;
    if !status.success() {
        return Err(format!("mvn could not fetch engine {engine}"));
    }
    eprintln!(
        "interop {engine}: jars in {} ({:.1}s)",
        lib.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(lib)
}

/// Kills the Java process when dropped: nothing outlives the run.
struct Server {
    name: &'static str,
    child: Child,
    out: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(name: &'static str, java_args: &[String], work: &Path) -> Result<Self> {
        let out = work.join(format!("{name}.out"));
        let file = fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let err = file
            .try_clone()
            .map_err(|e| format!("{}: {e}", out.display()))?;
        let child = Command::new("java")
            .args(java_args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start java for the {name}: {e}"))?;
        Ok(Self { name, child, out })
    }

    /// Waits for `line` in the server's output, or its exit, or the boot limit.
    fn wait_for(&mut self, line: &str) -> Result {
        let deadline = Instant::now() + BOOT_LIMIT;
        loop {
            let mut text = String::new();
            if let Ok(mut f) = fs::File::open(&self.out) {
                let _ = f.read_to_string(&mut text);
            }
            if text.contains(line) {
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
            // Polling another process's log file: there is no signal to wait on.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Inside the namespace: `interop-netns TARGET LIB WORK MQ`; writes `PASSED FAILED` to
/// `WORK/counts`.
pub(crate) fn in_netns(args: &[String]) -> Result {
    let [target, lib, work, mq] = args else {
        return Err("usage: interop-netns TARGET LIB WORK MQ".into());
    };
    let (lib, work, mq) = (Path::new(lib), Path::new(work), Path::new(mq));
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if !up.success() {
        return Err("cannot bring lo up in the namespace".into());
    }
    let (passed, failed) = if target == CLIENTS {
        run_clients(lib, work, mq)?
    } else {
        run_engine(target, lib, work, mq)?
    };
    eprintln!("interop {target}: {passed} passed, {failed} failed");
    fs::write(work.join("counts"), format!("{passed} {failed}\n")).map_err(|e| e.to_string())?;
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} scenario(s) failed against {target}"))
    }
}

/// Our client against the Java engine; returns the scenarios passed and failed.
fn run_engine(engine: &str, lib: &Path, work: &Path, mq: &Path) -> Result<(u32, u32)> {
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
        "broker.conf",
        format!(
            "brokerClusterName=DefaultCluster\nbrokerName=broker-a\nbrokerId=0\n\
             brokerRole=ASYNC_MASTER\nflushDiskType=ASYNC_FLUSH\nlistenPort=10911\n\
             brokerIP1=127.0.0.1\nbindAddress=127.0.0.1\nnamesrvAddr={NAMESRV}\n\
             autoCreateTopicEnable=true\nstorePathRootDir={store}\n\
             storePathCommitLog={store}/commitlog\nmappedFileSizeCommitLog=67108864\n\
             mapedFileSizeCommitLog=67108864\nmappedFileSizeConsumeQueue=600000\n\
             maxIndexNum=100000\nmaxHashSlotNum=10000\ntimerWheelEnable=false\n",
            store = store.display()
        ),
    )?;
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
    let java = |class: &str, conf: &str, logback: &str| {
        let mut a: Vec<String> = vec![
            "-Xms256m".into(),
            "-Xmx256m".into(),
            "-XX:+UseG1GC".into(),
            format!("-Duser.home={}", work.join("user").display()),
            format!("-Drocketmq.home.dir={}", home.display()),
        ];
        if is_4x {
            // 4.x unmaps files through internals JDK 17 hides.
            a.extend([
                "--add-opens".into(),
                "java.base/java.nio=ALL-UNNAMED".into(),
                "--add-exports".into(),
                "java.base/jdk.internal.ref=ALL-UNNAMED".into(),
            ]);
        } else {
            a.push(format!("-Drmq.logback.configurationFile={logback}"));
        }
        a.extend([
            "-cp".into(),
            format!("{}/*", lib.display()),
            class.into(),
            "-c".into(),
            work.join(conf).display().to_string(),
        ]);
        a
    };
    let mut namesrv = Server::start(
        "name server",
        &java(
            "org.apache.rocketmq.namesrv.NamesrvStartup",
            "namesrv.conf",
            "rmq.namesrv.logback.xml",
        ),
        work,
    )?;
    namesrv.wait_for("The Name Server boot success")?;
    let mut broker = Server::start(
        "broker",
        &java(
            "org.apache.rocketmq.broker.BrokerStartup",
            "broker.conf",
            "rmq.broker.logback.xml",
        ),
        work,
    )?;
    broker.wait_for("boot success")?;
    wait_for_route(mq)?;
    eprintln!("interop {engine}: name server and broker up");

    let (mut passed, mut failed) = (0, 0);
    for s in SCENARIOS.iter().filter(|s| s.on_4x || !is_4x) {
        let started = Instant::now();
        let out = Command::new(mq)
            .args(s.args)
            .args(["--namesrv", NAMESRV])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", mq.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let ok = out.status.success() && stdout.contains(s.expect);
        eprintln!(
            "interop {engine}: {} {} ({:.1}s)",
            if ok { "PASS" } else { "FAIL" },
            s.name,
            started.elapsed().as_secs_f64()
        );
        if ok {
            passed += 1;
        } else {
            failed += 1;
            eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    drop(broker);
    drop(namesrv);
    Ok((passed, failed))
}

/// `mq serve` with `args`, killed when dropped; waits until its broker listens.
fn mq_serve(mq: &Path, name: &'static str, args: &[&str], work: &Path) -> Result<Server> {
    let out = work.join(format!("{name}.out"));
    let file = fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(mq)
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", mq.display()))?;
    let mut server = Server { name, child, out };
    server.wait_for("broker listening on")?;
    Ok(server)
}

/// The official clients against `mq serve`; returns the scenarios passed and failed, as each
/// client program's closing `N passed, N failed` line counts them.
fn run_clients(dir: &Path, work: &Path, mq: &Path) -> Result<(u32, u32)> {
    let _serve = mq_serve(mq, "mq serve", &[], work)?;
    // A second cluster with auto-creation off, so no route exists for a new topic (4.5.1's
    // "no route" case).
    let _strict = mq_serve(
        mq,
        "mq serve without auto-create",
        &[
            "--namesrv-port",
            "9877",
            "--broker-port",
            "10921",
            "--broker-name",
            "broker-x",
            "--auto-create-topic",
            "false",
        ],
        work,
    )?;
    let java = |client: &str, class: &str, args: &[&str]| {
        let home = dir.join(client);
        let mut c = Command::new("java");
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
    };
    let mut go = Command::new(dir.join("client-go/target/client-go"));
    go.arg(NAMESRV)
        .env("ROCKETMQ_GO_LOG_LEVEL", "error")
        .env("HOME", work);
    let programs = [
        (
            "java 4.5.1",
            java(
                "client-java-4.5.1",
                "interop.Client451",
                &[NAMESRV, "127.0.0.1:9877"],
            ),
        ),
        (
            "java 5.3",
            java("client-java-5.3", "interop.Client53", &[NAMESRV]),
        ),
        ("go", go),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, mut command) in programs {
        let started = Instant::now();
        let (ok, output) = run_bounded(
            &mut command,
            CLIENT_LIMIT,
            &work.join(format!("{name}.log")),
        )?;
        let counts = output.lines().rev().find_map(closing_counts);
        match counts {
            Some((p, f)) => {
                passed += p;
                failed += f;
            }
            None => failed += 1,
        }
        let verdict = if ok && counts.is_some_and(|(_, f)| f == 0) {
            "PASS"
        } else {
            "FAIL"
        };
        eprintln!(
            "interop clients: {verdict} {name} ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
        for line in output
            .lines()
            .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
        {
            eprintln!("    {line}");
        }
        if verdict == "FAIL" {
            eprintln!("{output}");
        }
    }
    Ok((passed, failed))
}

/// `N passed, N failed` at the end of `line`.
fn closing_counts(line: &str) -> Option<(u32, u32)> {
    let (head, tail) = line.trim().rsplit_once(" passed, ")?;
    let passed = head.rsplit(' ').next()?.parse().ok()?;
    let failed = tail.strip_suffix(" failed")?.parse().ok()?;
    Some((passed, failed))
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
