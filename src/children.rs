//! Runs in child processes of this executable, so that a run that panics takes only itself
//! down: a pool of them at once, each under a wall-clock limit. `wasim fuzz` runs its seeds
//! this way, and `wasim scenario --seeds` and `--find-max-load` their runs.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Run `work(i)` for every `i` in `0..n`, `jobs` at a time, each on a thread of its own
/// (which waits on its child process); `done(i, result)` runs on the calling thread as each
/// one finishes, in the order they finish.
pub fn pool<T: Send>(n: usize, jobs: usize, work: impl Fn(usize) -> T + Sync, mut done: impl FnMut(usize, T)) {
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, T)>();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, n.max(1)) {
            let tx = tx.clone();
            let (next, work) = (&next, &work);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || tx.send((i, work(i))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (i, result) in rx {
            done(i, result);
        }
    });
}

/// Run `command` to its end, or kill it once it has run for `limit` (then the status says
/// it was killed and stderr says why, naming `limit_flag`, the option that set the limit).
/// Its output is read as it comes, so a chatty child never blocks on a full pipe.
pub fn run_with_limit(mut command: Command, limit: Duration, limit_flag: &str) -> std::io::Result<Output> {
    use std::io::Read;
    let mut child = command.spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let (status, killed) = loop {
        if let Some(status) = child.try_wait()? {
            break (status, false);
        }
        if started.elapsed() >= limit {
            let _ = child.kill();
            break (child.wait()?, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let mut stderr = err.join().unwrap_or_default();
    if killed {
        stderr.extend(format!("\nkilled after {} s: the seed ran past {limit_flag}\n", limit.as_secs()).bytes());
    }
    Ok(Output { status, stdout, stderr })
}

/// Why a child that gave no result died, in a line: its panic message, else the last line
/// it wrote to stderr, with its exit status.
pub fn why_died(o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr);
    let panic = stderr.lines().skip_while(|l| !l.contains("panicked")).take(2).collect::<Vec<_>>();
    let said = if panic.is_empty() { stderr.lines().last().unwrap_or("").to_string() } else { panic.join(" ") };
    format!("the run died ({}): {said}", o.status)
}
