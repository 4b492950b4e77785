//! `cargo xtask store-bench [--quick]`: what the broker's store costs as it fills. `mq serve`
//! runs as its own process on a fresh store that `mq bench produce --mode batch` fills in
//! steps up to 1, 2 and 4 GB (0.25, 0.5 and 1 with `--quick`); at each step the broker's
//! anonymous memory is read from `/proc`, and the broker is restarted twice: after SIGKILL
//! right after the fill (the log after the last checkpoint is replayed), then after a clean
//! shutdown (SIGINT), each timed from spawn to its "broker listening" line.
//! Writes its own section of `docs/performance.md`.

use std::path::Path;
use std::time::Instant;

use crate::interop::{self, Server};
use crate::{Result, cargo, mq_bench_json, root, start_mq_serve, target_dir};

/// One step of the fill.
struct Step {
    messages: u64,
    store_bytes: u64,
    /// After filling, in the process that wrote.
    anon_kib: u64,
    /// In a process just started on the store (after the crash restart).
    anon_restarted_kib: u64,
    clean_restart_s: f64,
    crash_restart_s: f64,
}

pub(crate) fn store_bench(args: &[String]) -> Result {
    let quick = args.iter().any(|a| a == "--quick");
    cargo(&["build", "--release", "-p", "mq-cli"], &[])?;
    let mq = target_dir().join("release/mq");
    let work = target_dir().join("store-bench");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let store = work.join("store");
    let gib: u64 = 1 << 30;
    let targets: Vec<u64> = if quick {
        vec![gib / 4, gib / 2, gib]
    } else {
        vec![gib, 2 * gib, 4 * gib]
    };

    let (mut server, _, _) = start(&mq, &store, &work)?;
    let empty_anon = anon_kib(server.pid());
    server.stop("INT")?;
    let (s, mut namesrv, empty_restart) = start(&mq, &store, &work)?;
    server = s;
    let mut messages = 0u64;
    let mut steps = Vec::new();
    for target in targets {
        while dir_bytes(&store) < target {
            let v = mq_bench_json(
                &mq,
                &[
                    "bench",
                    "produce",
                    "--namesrv",
                    &namesrv,
                    "--json",
                    "--mode",
                    "batch",
                    "--size",
                    "100",
                    "--window",
                    "16",
                    "--tasks",
                    "64",
                    "--duration",
                    if quick { "1" } else { "2" },
                ],
            )?;
            messages += v["ok"].as_u64().unwrap_or(0);
        }
        let anon = anon_kib(server.pid());
        // Killed right after the fill: the log tail since the last checkpoint is replayed.
        server.stop("KILL")?;
        let (s, _, crash) = start(&mq, &store, &work)?;
        server = s;
        let anon_restarted = anon_kib(server.pid());
        server.stop("INT")?;
        let (s, ns, clean) = start(&mq, &store, &work)?;
        server = s;
        namesrv = ns;
        steps.push(Step {
            messages,
            store_bytes: dir_bytes(&store),
            anon_kib: anon,
            anon_restarted_kib: anon_restarted,
            clean_restart_s: clean,
            crash_restart_s: crash,
        });
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&work);

    let mut section = String::from(
        "## Broker store as it fills (`cargo xtask store-bench`, also run by `cargo xtask bench`)\n\n",
    );
    section.push_str(
        "| stored messages | store GB | anon RSS MB after filling | anon RSS MB after a restart | restart after SIGKILL s | restart after SIGINT s | × empty store |\n",
    );
    section.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    let mb = |kib: u64| kib as f64 / 1024.0;
    for s in &steps {
        section.push_str(&format!(
            "| {} | {:.2} | {:.1} | {:.1} | {:.3} | {:.3} | {:.1} |\n",
            s.messages,
            s.store_bytes as f64 / gib as f64,
            mb(s.anon_kib),
            mb(s.anon_restarted_kib),
            s.crash_restart_s,
            s.clean_restart_s,
            s.clean_restart_s / empty_restart.max(1e-3),
        ));
    }
    if let (Some(first), Some(last)) = (steps.first(), steps.last()) {
        let slope = (last.anon_restarted_kib as f64 - first.anon_restarted_kib as f64) * 1024.0
            / (last.messages as f64 - first.messages as f64).max(1.0);
        section.push_str(&format!(
            "\nEmpty broker: {:.1} MB anon RSS, restart {:.3} s. Heap per stored message (slope of \
             the anon RSS of a broker just started on the store, first to last step): {slope:.2} \
             bytes. Filled by `mq bench produce --mode batch` (16 × 100 B per request); the \
             SIGKILL comes right after a fill, so its restart replays the log written since the \
             last checkpoint; anon RSS is `RssAnon` from `/proc/PID/status`; restarts are timed \
             from spawn to the broker's listening line, on the same store.\n",
            mb(empty_anon),
            empty_restart,
        ));
    }
    let doc = root().join("docs/performance.md");
    let old = std::fs::read_to_string(&doc).unwrap_or_default();
    std::fs::write(&doc, interop::with_section(&old, "store-bench", &section))
        .map_err(|e| format!("{}: {e}", doc.display()))?;
    eprintln!("{section}");
    eprintln!("store-bench: wrote its section of {}", doc.display());
    Ok(())
}

/// Starts `mq serve` on `store`; returns it, its name server address and how long it took to
/// listen.
fn start(mq: &Path, store: &Path, work: &Path) -> Result<(Server, String, f64)> {
    let started = Instant::now();
    let (server, namesrv) = start_mq_serve(mq, store, work)?;
    Ok((server, namesrv, started.elapsed().as_secs_f64()))
}

/// A process's anonymous resident memory in KiB (`RssAnon`).
fn anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(std::result::Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
