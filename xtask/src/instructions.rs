//! `cargo xtask instructions`: the instructions a message costs the client and the broker, and
//! a header step costs the codec, counted by callgrind. On a shared, noisy machine CPU time per
//! message moves by a third from one run to the next; an instruction count moves by well under
//! a percent, so it shows what a change to the code did. It is not time: a cache miss, a clock
//! reading (`rdtsc`) or a system call counts as one instruction or a few.
//!
//! Each count is the difference of two runs, of few and of many messages, over the difference
//! of their messages: start-up, connection and shutdown cancel out. The process counted runs
//! with one worker thread (`TOKIO_WORKER_THREADS=1`), so that callgrind, which runs threads one
//! at a time, measures the code rather than its waits.

use std::path::Path;
use std::process::Command;

use crate::{Result, bench_json, cargo, mq_bench_json, mq_serve, root, start_serve, target_dir};

/// A bench row: mode, message size, sends in flight per task (64 tasks).
#[derive(Clone, Copy)]
struct Row {
    mode: &'static str,
    size: &'static str,
    window: &'static str,
}

const ROWS: &[Row] = &[
    Row {
        mode: "sync",
        size: "1024",
        window: "1",
    },
    Row {
        mode: "async",
        size: "1024",
        window: "16",
    },
    Row {
        mode: "auto-batch",
        size: "100",
        window: "16",
    },
    Row {
        mode: "batch",
        size: "100",
        window: "16",
    },
];

/// The steps of `header_loop` (see `benches/examples/header_loop.rs`).
const STEPS: &[(&str, &str)] = &[
    ("request", "the broker reads a send request and its header"),
    ("encode", "the producer writes a send request header"),
    (
        "response",
        "the producer reads a send response and its header",
    ),
    ("answer", "the broker writes a send's answer header"),
];

pub(crate) fn instructions(args: &[String]) -> Result {
    let quick = args.iter().any(|a| a == "--quick");
    let valgrind = Command::new("valgrind").arg("--version").output();
    if !valgrind.is_ok_and(|o| o.status.success()) {
        return Err("valgrind is not installed (apt-get install valgrind)".into());
    }
    cargo(&["build", "--release", "-p", "mq-cli"], &[])?;
    cargo(
        &[
            "build",
            "--release",
            "-p",
            "mq-benches",
            "--example",
            "header_loop",
        ],
        &[],
    )?;
    let release = target_dir().join("release");
    let mq = release.join("mq");
    let work = target_dir().join("instructions");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    // Sends of the short and the long run (a batch send carries 16 messages).
    let (few, many) = if quick {
        (2_000, 6_000)
    } else {
        (10_000, 30_000)
    };
    let mut rows = Vec::new();
    for &row in ROWS {
        let client = per_message(few, many, |n| client_run(&mq, &work, row, n))?;
        let broker = per_message(few, many, |n| broker_run(&mq, &work, row, n))?;
        eprintln!(
            "{} {} B: client {client:.0}, broker {broker:.0} instructions/msg",
            row.mode, row.size
        );
        rows.push((row, client, broker));
    }
    let header_loop = release.join("examples/header_loop");
    let mut steps = Vec::new();
    for &(step, what) in STEPS {
        let mut per_codec = Vec::new();
        for codec in ["json", "rocketmq"] {
            let count = |n: u64| -> Result<u64> {
                let out = work.join(format!("callgrind.{step}.{codec}.{n}"));
                let mut cmd = callgrind(&out);
                cmd.arg(&header_loop)
                    .args([step, &n.to_string(), codec])
                    .output()
                    .map_err(|e| format!("header_loop: {e}"))?;
                total(&out)
            };
            let (a, b) = (count(1_000)?, count(11_000)?);
            per_codec.push(b.saturating_sub(a) / 10_000);
        }
        eprintln!("{step}: {per_codec:?} instructions");
        steps.push((step, what, per_codec));
    }
    let page = page(&rows, &steps, few, many);
    let path = root().join("docs/instructions.md");
    std::fs::write(&path, &page).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("{page}");
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Instructions per message: the difference of a run of `few` sends and one of `many`, over
/// the difference of the messages they acknowledged.
fn per_message(few: u64, many: u64, mut run: impl FnMut(u64) -> Result<(u64, u64)>) -> Result<f64> {
    let (small, small_ok) = run(few)?;
    let (large, large_ok) = run(many)?;
    if large_ok <= small_ok || large <= small {
        return Err(format!(
            "the long run counted no more than the short one ({small}/{small_ok} vs {large}/{large_ok})"
        ));
    }
    Ok((large - small) as f64 / (large_ok - small_ok) as f64)
}

/// `valgrind --tool=callgrind` writing its counts to `out`, the program it runs on one worker
/// thread.
fn callgrind(out: &Path) -> Command {
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .env("TOKIO_WORKER_THREADS", "1");
    cmd
}

/// The instructions a callgrind output file counted in all (its `summary:` line).
fn total(out: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(out).map_err(|e| format!("{}: {e}", out.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("{}: no summary line", out.display()))
}

/// `mq bench produce` arguments for `sends` sends of `row`.
fn bench_args<'a>(namesrv: &'a str, row: Row, sends: &'a str) -> Vec<&'a str> {
    vec![
        "bench",
        "produce",
        "--namesrv",
        namesrv,
        "--mode",
        row.mode,
        "--size",
        row.size,
        "--window",
        row.window,
        "--tasks",
        "64",
        "--count",
        sends,
        "--json",
    ]
}

/// The messages a bench acknowledged.
fn acknowledged(v: &serde_json::Value) -> Result<u64> {
    v["ok"]
        .as_u64()
        .ok_or_else(|| format!("bench JSON without ok: {v}"))
}

/// The client counted: `mq serve` as it is, the bench under callgrind. Returns the bench's
/// instructions and the messages it had acknowledged.
fn client_run(mq: &Path, work: &Path, row: Row, sends: u64) -> Result<(u64, u64)> {
    let (_server, namesrv) = mq_serve(mq, &work.join("serve"), &[])?;
    let out = work.join(format!("callgrind.client.{}.{sends}", row.mode));
    let sends = sends.to_string();
    let v = bench_json(
        callgrind(&out)
            .arg(mq)
            .args(bench_args(&namesrv, row, &sends)),
    )?;
    Ok((total(&out)?, acknowledged(&v)?))
}

/// The broker counted: `mq serve` under callgrind (stopped with SIGINT, when callgrind writes
/// its counts), the bench as it is.
fn broker_run(mq: &Path, work: &Path, row: Row, sends: u64) -> Result<(u64, u64)> {
    let dir = work.join("serve-counted");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = work.join(format!("callgrind.broker.{}.{sends}", row.mode));
    let mut command = callgrind(&out);
    command
        .arg(mq)
        .args(["serve", "--namesrv-port", "0", "--broker-port", "0"])
        .arg("--store-dir")
        .arg(dir.join("store"));
    let (mut server, namesrv) = start_serve("mq serve under callgrind", &mut command, &dir)?;
    let sends = sends.to_string();
    let v = mq_bench_json(mq, &bench_args(&namesrv, row, &sends))?;
    server.stop("INT")?;
    Ok((total(&out)?, acknowledged(&v)?))
}

fn page(rows: &[(Row, f64, f64)], steps: &[(&str, &str, Vec<u64>)], few: u64, many: u64) -> String {
    let mut md = format!(
        "# Instructions per message\n\nGenerated by `cargo xtask instructions` (callgrind; see \
         `xtask/src/instructions.rs`). Instruction counts move by well under a percent from one \
         run to the next where CPU time on this shared machine moves by a third, so they show \
         what a change to the code did; they are not time (a cache miss, a clock reading or a \
         system call counts as one instruction or a few). Each figure is the difference of a \
         run of {few} and one of {many} sends over the difference of their messages, the \
         process counted on one worker thread, the other one (`mq serve` or `mq bench`) \
         running as it is.\n\n\
         | bench (64 tasks) | size (B) | in flight per task | client instructions/msg | broker instructions/msg |\n\
         | --- | --- | --- | --- | --- |\n"
    );
    for (Row { mode, size, window }, client, broker) in rows {
        md.push_str(&format!(
            "| produce {mode} | {size} | {window} | {client:.0} | {broker:.0} |\n"
        ));
    }
    md.push_str(
        "\nOne header step, `header_loop` (`benches/examples/header_loop.rs`, the Java send \
         header; system allocator), instructions per step:\n\n\
         | step | JSON | ROCKETMQ |\n| --- | --- | --- |\n",
    );
    for (step, what, counts) in steps {
        let c = |i: usize| counts.get(i).map_or_else(|| "-".to_owned(), u64::to_string);
        md.push_str(&format!("| {step}: {what} | {} | {} |\n", c(0), c(1)));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::{per_message, total};

    #[test]
    fn a_message_costs_the_difference_of_two_runs_over_their_messages() {
        let runs = [(1_000_000, 100), (4_000_000, 400)];
        let mut next = runs.iter().copied();
        let got = per_message(100, 400, |_| Ok(next.next().unwrap())).unwrap();
        assert!((got - 10_000.0).abs() < 1e-9, "{got}");
        // A long run that acknowledged no more than the short one says nothing.
        let mut same = [(1_000, 100), (2_000, 100)].into_iter();
        assert!(per_message(100, 400, |_| Ok(same.next().unwrap())).is_err());
    }

    #[test]
    fn the_total_is_callgrinds_summary_line() {
        let dir = std::env::temp_dir().join(format!("xtask-instructions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("callgrind.out");
        std::fs::write(
            &file,
            "version: 1\nevents: Ir\nsummary: 123456789\ntotals: 123456789\n",
        )
        .unwrap();
        assert_eq!(total(&file).unwrap(), 123_456_789);
        std::fs::write(&file, "events: Ir\n").unwrap();
        assert!(total(&file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
