//! A FIFO queue in front of `c` identical workers, with exact times: a request that
//! arrives at `t` departs at `max(t, earliest free worker) + service`.
//!
//! Work is served from its exact arrival time even when the process notices it late. A
//! hop shorter than a tick is handed over at the next tick, so a process may meet a
//! request after it has served others that arrived after it. Each worker keeps its busy
//! intervals of the recent past (`RECENT` of them), and a request is served from the earliest
//! time at or after its arrival at which some worker is free for its whole service: in the
//! idle gaps of the past when there were any (as it would have been, had it been noticed
//! on time), behind the queue otherwise. So the tick decides when a process notices work,
//! not the times it reports, except for the wait a late request could not avoid at a busy
//! server. Arrivals noticed on time take the usual path, `max(arrival, free) + service`.

use hdrhistogram::Histogram;
use wasim_model::Time;

/// Busy intervals each worker remembers: a late request finds its gap among the worker's
/// latest intervals; before them the worker counts as busy.
const RECENT: usize = 32;

/// Slots a worker's intervals slide along: the latest `RECENT` sit in a window of them
/// that moves up by one as the oldest is forgotten, and moves back to the start only when
/// it reaches the end (one copy of `RECENT - 1` every `SPAN - RECENT` appends, where a
/// packed array copies them on every append and a ring pays an index computation on every
/// access).
const SPAN: usize = 2 * RECENT;

/// One worker's latest busy intervals: disjoint, in time order (oldest first, contiguous
/// from `start`), touching ones merged. Most bookings append or extend the newest
/// interval; a late one is placed in order among them.
#[derive(Clone, Copy, Debug)]
struct Worker {
    intervals: [(Time, Time); SPAN],
    start: usize,
    len: usize,
    /// Every forgotten interval ended by this.
    known_from: Time,
}

impl Default for Worker {
    fn default() -> Self {
        Worker { intervals: [(Time::ZERO, Time::ZERO); SPAN], start: 0, len: 0, known_from: Time::ZERO }
    }
}

impl Worker {
    /// The remembered intervals, oldest first.
    #[inline]
    fn recent(&self) -> &[(Time, Time)] {
        &self.intervals[self.start..self.start + self.len]
    }

    /// Forget the oldest interval.
    #[inline]
    fn forget_oldest(&mut self) {
        self.known_from = self.known_from.max(self.intervals[self.start].1);
        self.start += 1;
        self.len -= 1;
    }

    /// Make room for one more interval after the newest.
    #[inline]
    fn room_at_end(&mut self) {
        if self.start + self.len == SPAN {
            self.intervals.copy_within(self.start..SPAN, 0);
            self.start = 0;
        }
    }

    /// The earliest start at or after `a` with `[start, start + d)` free, given that the
    /// worker is busy at `a` or later (`a` is before its last interval's end).
    fn fit_late(&self, a: Time, d: u64) -> Time {
        let mut t = a.max(self.known_from);
        // The intervals are disjoint and in order, so their ends rise: those over by `t`
        // are a prefix, found by bisection.
        let recent = self.recent();
        let past = recent.partition_point(|&(_, e)| e <= t);
        for &(s, e) in &recent[past..] {
            if t.as_us() + d <= s.as_us() {
                return t;
            }
            t = e;
        }
        t
    }

    /// Book `[s, e)`, which is free and starts at or after the newest interval's end.
    #[inline]
    fn book_last(&mut self, s: Time, e: Time) {
        if self.len > 0 {
            let newest = &mut self.intervals[self.start + self.len - 1];
            if newest.1 == s {
                newest.1 = e;
                return;
            }
        }
        if self.len == RECENT {
            self.forget_oldest();
        }
        self.room_at_end();
        self.intervals[self.start + self.len] = (s, e);
        self.len += 1;
    }

    /// Book `[s, e)`, which is free: at the end, or a late interval placed in time order.
    fn book(&mut self, s: Time, e: Time) {
        if self.len == 0 || self.recent()[self.len - 1].1 <= s {
            return self.book_last(s, e);
        }
        let p = self.recent().iter().position(|iv| s < iv.0).expect("a late interval precedes the newest");
        if self.len == RECENT {
            // Full: the oldest is forgotten, those before the new one move down a place.
            if p == 0 {
                self.known_from = self.known_from.max(e);
                return;
            }
            let first = self.start;
            self.forget_oldest();
            self.intervals.copy_within(first + 1..first + p, first);
            self.intervals[first + p - 1] = (s, e);
            self.start = first;
            self.len += 1;
        } else {
            // Those after the new one move up a place.
            self.room_at_end();
            let (at, end) = (self.start + p, self.start + self.len);
            self.intervals.copy_within(at..end, at + 1);
            self.intervals[at] = (s, e);
            self.len += 1;
        }
    }
}

/// The queue of one process (a Redis shard has one worker; a Cassandra node 32).
#[derive(Clone, Debug)]
pub struct Fifo {
    workers: Vec<Worker>,
    /// When each worker's last booked interval ends (`Worker`'s newest end, or zero): most
    /// requests need only this, and a dense array of it is scanned at vector speed.
    free: Vec<Time>,
    /// The worker to try first.
    next: usize,
    /// The latest arrival seen: one before it was noticed late, and may fit a gap.
    latest: Time,
    /// Service time inside the measuring window, for utilisation.
    busy_us: u64,
    served: u64,
    /// Service time of every request served, whole run: the work that arrived, for the
    /// utilisation over time.
    booked_us: u64,
    window: (Time, Time),
    /// Each visit's time in queue and service, for arrivals in the window (calibration).
    sojourns: Option<Box<Histogram<u64>>>,
}

impl Fifo {
    /// A queue with `workers` workers that accounts utilisation inside `window`.
    pub fn new(workers: u32, window: (Time, Time)) -> Fifo {
        assert!(workers > 0, "a queue needs a worker");
        Fifo {
            workers: vec![Worker::default(); workers as usize],
            free: vec![Time::ZERO; workers as usize],
            next: 0,
            latest: Time::ZERO,
            busy_us: 0,
            served: 0,
            booked_us: 0,
            window,
            sojourns: None,
        }
    }

    /// Record every visit's sojourn (arrivals in the window) from now on.
    pub fn record_sojourns(&mut self) {
        self.sojourns = Some(Box::new(crate::metrics::latency_histogram()));
    }

    /// File the queue's figures (workers, busy time, visits served, sojourns recorded) in a
    /// process's report.
    pub fn report_into(&mut self, report: &mut crate::metrics::NodeReport) {
        report.workers = self.workers();
        report.busy_us = self.busy_us();
        report.served = self.served();
        report.sojourns = self.take_sojourns();
    }

    /// The sojourns recorded, if recording.
    pub fn take_sojourns(&mut self) -> Option<Histogram<u64>> {
        self.sojourns.take().map(|h| *h)
    }

    /// Serve a request arriving at `arrival` that takes `service_us` microseconds: returns
    /// its departure.
    #[inline(always)]
    pub fn serve(&mut self, arrival: Time, service_us: u64) -> Time {
        // The usual case, inline: the next worker in turn is free at the arrival.
        let next = self.next;
        if self.free[next] <= arrival {
            self.latest = self.latest.max(arrival);
            let departure = Time(arrival.as_us() + service_us);
            // No work (a service time that rounds to zero) keeps no worker busy.
            if service_us > 0 {
                self.workers[next].book_last(arrival, departure);
                self.free[next] = departure;
            }
            self.next = if next + 1 == self.workers.len() { 0 } else { next + 1 };
            self.account(arrival, arrival, departure);
            return departure;
        }
        self.serve_waiting(arrival, service_us)
    }

    /// `serve` when the next worker is busy at the arrival.
    #[inline(never)]
    fn serve_waiting(&mut self, arrival: Time, service_us: u64) -> Time {
        let in_order = arrival >= self.latest;
        self.latest = self.latest.max(arrival);
        // Any worker free from the arrival on serves it at once (the next one in turn was
        // tried first). An arrival in order (none later was served) can only start when a
        // worker frees; one noticed late may fit a gap.
        let (i, start) = if in_order { self.earliest_free(arrival) } else { self.earliest(arrival, service_us) };
        let departure = Time(start.as_us() + service_us);
        // No work (a service time that rounds to zero) keeps no worker busy.
        if start != departure {
            if start >= self.free[i] {
                self.workers[i].book_last(start, departure);
                self.free[i] = departure;
            } else {
                self.workers[i].book(start, departure);
            }
        }
        self.next = if i + 1 == self.workers.len() { 0 } else { i + 1 };
        self.account(arrival, start, departure);
        departure
    }

    /// Utilisation inside the window: requests that arrived in it, and busy time inside it
    /// (so that utilisation cannot exceed 100%).
    #[inline]
    fn account(&mut self, arrival: Time, start: Time, departure: Time) {
        self.booked_us += departure.as_us() - start.as_us();
        let (from, until) = self.window;
        if arrival >= from && arrival < until {
            self.served += 1;
            if let Some(h) = &mut self.sojourns {
                crate::metrics::record_us(h, departure.as_us() - arrival.as_us());
            }
        }
        let (s, e) = (start.max(from), departure.min(until));
        if s < e {
            self.busy_us += e.as_us() - s.as_us();
        }
    }

    /// The worker that frees first, and when it starts a request arriving at `arrival`.
    fn earliest_free(&self, arrival: Time) -> (usize, Time) {
        // Two passes over the dense array, each at vector speed: the earliest time, then
        // the first worker free then.
        let free = self.free.iter().copied().min().expect("at least one worker");
        let i = self.free.iter().position(|&t| t == free).expect("the earliest is there");
        (i, free.max(arrival))
    }

    /// The earliest start at or after `arrival` on worker `i`, gaps included.
    #[inline]
    fn fit(&self, i: usize, arrival: Time, service_us: u64) -> Time {
        if arrival >= self.free[i] {
            arrival
        } else {
            self.workers[i].fit_late(arrival, service_us)
        }
    }

    /// The worker that can start earliest, gaps included, and when.
    fn earliest(&self, arrival: Time, service_us: u64) -> (usize, Time) {
        let n = self.workers.len();
        let mut best = (self.next, self.fit(self.next, arrival, service_us));
        for k in 1..n {
            if best.1 == arrival {
                break;
            }
            let i = if self.next + k >= n { self.next + k - n } else { self.next + k };
            let start = self.fit(i, arrival, service_us);
            if start < best.1 {
                best = (i, start);
            }
        }
        best
    }

    /// Workers of this queue.
    pub fn workers(&self) -> u32 {
        self.workers.len() as u32
    }

    /// Service time spent inside the window, in µs.
    pub fn busy_us(&self) -> u64 {
        self.busy_us
    }

    /// Requests that arrived in the window.
    pub fn served(&self) -> u64 {
        self.served
    }

    /// Service time of every request served so far, whole run, in µs (booked when the
    /// request arrives, so an overloaded queue books more than a second a second).
    pub fn booked_us(&self) -> u64 {
        self.booked_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    #[test]
    fn single_worker_queues_in_arrival_order() {
        let mut f = Fifo::new(1, (Time::ZERO, Time::NEVER));
        assert_eq!(f.serve(Time::ZERO, MS), Time::from_ms(1));
        assert_eq!(f.serve(Time::ZERO, MS), Time::from_ms(2), "the second waits for the first");
        assert_eq!(f.serve(Time::from_ms(10), MS), Time::from_ms(11), "an idle server starts at once");
        assert_eq!(f.busy_us(), 3_000);
    }

    #[test]
    fn workers_serve_in_parallel() {
        let mut f = Fifo::new(2, (Time::ZERO, Time::NEVER));
        assert_eq!(f.serve(Time::ZERO, MS), Time::from_ms(1));
        assert_eq!(f.serve(Time::ZERO, MS), Time::from_ms(1));
        assert_eq!(f.serve(Time::ZERO, MS), Time::from_ms(2));
    }

    #[test]
    fn utilisation_counts_busy_time_inside_the_window_only() {
        let mut f = Fifo::new(1, (Time::from_ms(5), Time::from_ms(10)));
        f.serve(Time::ZERO, MS);
        f.serve(Time::from_ms(6), MS);
        f.serve(Time::from_ms(9), 3 * MS); // busy 9-12: 1 ms inside
        assert_eq!((f.busy_us(), f.served()), (2_000, 2));
        // Far past capacity: busy time still fits the window.
        let mut f = Fifo::new(1, (Time::ZERO, Time::from_ms(10)));
        for _ in 0..100 {
            f.serve(Time::ZERO, MS);
        }
        assert_eq!(f.busy_us(), 10_000, "utilisation 100%, not 1,000%");
    }

    #[test]
    fn a_request_noticed_late_is_served_from_its_arrival_when_a_worker_was_free() {
        let mut f = Fifo::new(1, (Time::ZERO, Time::NEVER));
        assert_eq!(f.serve(Time::from_ms(10), MS), Time::from_ms(11));
        // Arrived at 5 ms, noticed after the one at 10 ms: the worker was idle at 5 ms.
        assert_eq!(f.serve(Time::from_ms(5), MS), Time::from_ms(6));
        // Arrived at 9.5 ms: the gap before 10 ms is too short, so it waits for 11 ms.
        assert_eq!(f.serve(Time(9_500), MS), Time::from_ms(12));
        // A gap between 6 and 9.5 ms still takes a short one.
        assert_eq!(f.serve(Time::from_ms(7), MS), Time::from_ms(8));
    }

    #[test]
    fn a_late_request_takes_whichever_worker_was_free() {
        let mut f = Fifo::new(2, (Time::ZERO, Time::NEVER));
        f.serve(Time::from_ms(10), 5 * MS); // worker 0: 10-15
        f.serve(Time::from_ms(10), MS); // worker 1: 10-11
        assert_eq!(f.serve(Time::from_ms(9), 2 * MS), Time::from_ms(13), "no gap at 9 ms: worker 1 after 11 ms");
        assert_eq!(f.serve(Time::from_ms(2), 2 * MS), Time::from_ms(4), "both idle at 2 ms");
    }

    #[test]
    fn a_worker_remembers_its_latest_intervals_and_counts_as_busy_before_them() {
        let mut f = Fifo::new(1, (Time::ZERO, Time::NEVER));
        let n = RECENT as u64 + 4;
        for k in 0..n {
            f.serve(Time::from_ms(2 * k), MS); // busy 2k .. 2k + 1 ms; the ring keeps k >= 4
        }
        // A late request in a gap the worker still remembers (the one before the last).
        let gap = 2 * (n - 1) - 1;
        assert_eq!(f.serve(Time(gap * MS + 200), 500), Time(gap * MS + 700));
        // That dropped the oldest interval (k = 4, 8 to 9 ms): before 9 ms counts as busy.
        assert_eq!(f.serve(Time::from_ms(1), 500), Time(9_500));
        // Zero work takes no time and books nothing.
        assert_eq!(f.serve(Time::from_ms(30), 0), Time::from_ms(30));
    }

    /// The latest `RECENT` intervals kept the plain way (a vector, the oldest dropped from
    /// the front), to hold the sliding window to.
    #[derive(Default)]
    struct Reference {
        intervals: Vec<(Time, Time)>,
        known_from: Time,
    }

    impl Reference {
        fn fit_late(&self, a: Time, d: u64) -> Time {
            let mut t = a.max(self.known_from);
            for &(s, e) in &self.intervals {
                if e <= t {
                    continue;
                }
                if t.as_us() + d <= s.as_us() {
                    return t;
                }
                t = e;
            }
            t
        }

        fn book(&mut self, s: Time, e: Time) {
            if let Some(newest) = self.intervals.last_mut().filter(|n| n.1 == s) {
                newest.1 = e;
                return;
            }
            let p = self.intervals.iter().position(|iv| s < iv.0).unwrap_or(self.intervals.len());
            self.intervals.insert(p, (s, e));
            if self.intervals.len() > RECENT {
                let (_, end) = self.intervals.remove(0);
                self.known_from = self.known_from.max(end);
            }
        }
    }

    #[test]
    fn the_sliding_window_keeps_what_a_plain_list_of_the_latest_intervals_keeps() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (mut worker, mut reference) = (Worker::default(), Reference::default());
        let mut clock = 0u64;
        for step in 0..20_000 {
            // Mostly in-order work, some of it late by up to a few intervals.
            clock += rng.random_range(0..300);
            let a = Time(clock.saturating_sub(if rng.random_bool(0.3) { rng.random_range(0..6_000) } else { 0 }));
            let d = rng.random_range(1..150); // about half busy: gaps to fill, intervals to keep
            let start = reference.fit_late(a, d);
            assert_eq!(worker.fit_late(a, d), start, "step {step}");
            worker.book(start, Time(start.as_us() + d));
            reference.book(start, Time(start.as_us() + d));
            assert_eq!(worker.recent(), &reference.intervals[..], "step {step}");
            assert_eq!(worker.known_from, reference.known_from, "step {step}");
        }
    }
}
