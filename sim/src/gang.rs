//! A gang of threads that runs one tick's processes side by side.
//!
//! Within a tick the processes are independent: every hop takes at least one tick, so
//! nothing one process does in tick `k` reaches another before tick `k + 1`. The
//! supervisor hands the gang a tick's work as numbered items; the calling thread and the
//! helpers take items from a shared counter until none is left, and the call returns when
//! every item is done. Which thread runs which item cannot change a result: each item
//! touches only its own processes' state, and what they send is put on the network
//! afterwards, in process order, by the caller.
//!
//! A tick is about a tenth of a millisecond of work, so the helpers wait for the next one
//! by spinning a little (a futex wake-up would cost about as much as a small tick), then
//! by yielding, then asleep until woken: a gang sharing the cores with other work (two
//! runs at once) gives them back. madsim forbids spawning threads inside the simulation:
//! the gang is made before it starts and lent to it.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The work of one call: items `0..n` of `f`.
type Work<'a> = &'a (dyn Fn(usize) + Sync);

/// Spins of a waiting thread before it starts yielding its core (about 50 µs).
const SPINS_BEFORE_YIELD: u32 = 1_000;
/// Yields of a waiting helper before it sleeps until woken.
const YIELDS_BEFORE_SLEEP: u32 = 100;
/// The longest a sleeping helper sleeps before it looks again (a wake-up is never lost:
/// parking returns at once after an unpark; this only bounds the cost of a mistake).
const SLEEP: std::time::Duration = std::time::Duration::from_millis(1);

struct Inner {
    /// Bumped for every call; a helper works when it sees a new value.
    call: AtomicU64,
    /// The current call's work: set before `call` is bumped, cleared once every helper
    /// reported done (see `Gang::run`).
    work: Mutex<Option<Work<'static>>>,
    items: AtomicUsize,
    next: AtomicUsize,
    /// Helpers done with the current call.
    done: AtomicUsize,
    /// The first panic of a helper in the current call.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    stop: AtomicBool,
}

impl Inner {
    /// Take and run items until none is left; a panic is kept, and stops nobody else.
    fn work(&self, work: Work<'_>) -> Option<Box<dyn Any + Send>> {
        let items = self.items.load(Ordering::Acquire);
        let mut panic = None;
        loop {
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            if i >= items {
                return panic;
            }
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| work(i))) {
                panic.get_or_insert(p);
            }
        }
    }
}

/// The calling thread and `threads - 1` helpers.
pub struct Gang {
    inner: Arc<Inner>,
    helpers: Vec<JoinHandle<()>>,
}

impl Gang {
    /// A gang of `threads` threads in all (the caller counts as one; 0 is taken as 1).
    pub fn new(threads: usize) -> Gang {
        let inner = Arc::new(Inner {
            call: AtomicU64::new(0),
            work: Mutex::new(None),
            items: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let helpers = (1..threads.max(1))
            .map(|k| {
                let inner = inner.clone();
                std::thread::Builder::new()
                    .name(format!("wasim-gang-{k}"))
                    .spawn(move || helper(&inner))
                    .expect("spawn a gang thread")
            })
            .collect();
        Gang { inner, helpers }
    }

    /// Threads in the gang, the caller included.
    pub fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Run `f(0)`, ..., `f(n - 1)`, spread over the gang; returns when all are done. A
    /// panic in any item is raised here once all are done.
    pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.helpers.is_empty() || n <= 1 {
            (0..n).for_each(f);
            return;
        }
        let inner = &*self.inner;
        // SAFETY: the helpers use `f` only between the bump of `call` below and their
        // report in `done`, and this function does not return (nor unwind: panics of the
        // items are caught) before every helper has reported, so `f` outlives every use.
        let work: Work<'static> = unsafe { std::mem::transmute::<Work<'_>, Work<'static>>(f) };
        *inner.work.lock().expect("gang lock") = Some(work);
        inner.items.store(n, Ordering::Release);
        inner.next.store(0, Ordering::Release);
        inner.done.store(0, Ordering::Release);
        inner.call.fetch_add(1, Ordering::AcqRel);
        for h in &self.helpers {
            h.thread().unpark();
        }
        let mine = inner.work(f);
        let mut spins = 0u32;
        while inner.done.load(Ordering::Acquire) < self.helpers.len() {
            wait(&mut spins, false);
        }
        *inner.work.lock().expect("gang lock") = None;
        let theirs = inner.panic.lock().expect("gang lock").take();
        if let Some(p) = mine.or(theirs) {
            resume_unwind(p);
        }
    }
}

impl Drop for Gang {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        for h in self.helpers.drain(..) {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// Spin a while, then yield the core; a helper (`sleeps`) then sleeps until woken, so that
/// one waiting through a long sequential phase (a connect ramp's set-up) keeps no core.
#[inline]
fn wait(waited: &mut u32, sleeps: bool) {
    *waited = waited.saturating_add(1);
    if *waited <= SPINS_BEFORE_YIELD {
        std::hint::spin_loop();
    } else if !sleeps || *waited <= SPINS_BEFORE_YIELD + YIELDS_BEFORE_SLEEP {
        std::thread::yield_now();
    } else {
        std::thread::park_timeout(SLEEP);
    }
}

fn helper(inner: &Inner) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        let call = loop {
            let call = inner.call.load(Ordering::Acquire);
            if call != seen {
                break call;
            }
            if inner.stop.load(Ordering::Acquire) {
                return;
            }
            wait(&mut spins, true);
        };
        seen = call;
        let work = inner.work.lock().expect("gang lock").expect("work set before the call");
        if let Some(p) = inner.work(work) {
            inner.panic.lock().expect("gang lock").get_or_insert(p);
        }
        inner.done.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_whatever_the_gang() {
        for threads in [1, 2, 3] {
            let gang = Gang::new(threads);
            for n in [0, 1, 2, 7, 100] {
                let counts: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                gang.run(n, &|i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "{threads} threads, {n} items");
            }
        }
    }

    #[test]
    fn a_panic_in_an_item_reaches_the_caller_after_the_others_finish() {
        let gang = Gang::new(2);
        let finished = AtomicUsize::new(0);
        let result = catch_unwind(AssertUnwindSafe(|| {
            gang.run(50, &|i| {
                if i == 7 {
                    panic!("item 7");
                }
                finished.fetch_add(1, Ordering::Relaxed);
            })
        }));
        assert!(result.is_err());
        assert_eq!(finished.load(Ordering::Relaxed), 49);
        // The gang still works after.
        let again = AtomicUsize::new(0);
        gang.run(10, &|_| {
            again.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(again.load(Ordering::Relaxed), 10);
    }
}
