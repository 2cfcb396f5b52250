//! A FIFO queue in front of `c` identical workers, with exact times: a request that
//! arrives at `t` departs at `max(t, earliest free worker) + service`.
//!
//! Work is served from its exact arrival time even when the process notices it late. A
//! hop shorter than a tick is handed over at the next tick, so a process may meet a
//! request after it has served others that arrived after it. Each worker keeps its busy
//! intervals of the recent past (`LATE_MAX`), and a request is served from the earliest
//! time at or after its arrival at which some worker is free for its whole service: in the
//! idle gaps of the past when there were any (as it would have been, had it been noticed
//! on time), behind the queue otherwise. So the tick decides when a process notices work,
//! not the times it reports, except for the wait a late request could not avoid at a busy
//! server. Arrivals noticed on time take the usual path, `max(arrival, free) + service`.

use std::collections::VecDeque;
use wasim_model::Time;

/// How far in the past a request may still be placed: longer than any chain of sub-tick
/// hops lags behind the tick (a handful of hops, a tick each). An older request is served
/// from this far back, as if it had arrived then.
const LATE_MAX_US: u64 = 50_000;
/// Busy intervals a late request looks through on one worker for a gap before it settles
/// for the end of that worker's queue: bounds the cost of a late request at a server with
/// a long, fragmented backlog.
const GAP_SCAN_MAX: usize = 16;

/// One worker's busy intervals, disjoint, in time order, touching ones merged.
#[derive(Clone, Debug, Default)]
struct Worker {
    busy: VecDeque<(Time, Time)>,
}

impl Worker {
    /// When the worker's last booked interval ends.
    #[inline]
    fn free_from(&self) -> Time {
        self.busy.back().map_or(Time::ZERO, |b| b.1)
    }

    /// The earliest start at or after `a` with `[start, start + d)` free.
    fn fit(&self, a: Time, d: u64) -> Time {
        let end = self.free_from();
        if a >= end {
            return a;
        }
        let first = self.busy.partition_point(|&(_, e)| e <= a);
        let mut t = a;
        for &(s, e) in self.busy.range(first..).take(GAP_SCAN_MAX) {
            if t.as_us() + d <= s.as_us() {
                return t;
            }
            t = t.max(e);
        }
        t.max(end)
    }

    /// Book `[s, e)`, which is free.
    fn book(&mut self, s: Time, e: Time) {
        match self.busy.back_mut() {
            Some(last) if last.1 == s => last.1 = e,
            Some(last) if last.1 < s => self.busy.push_back((s, e)),
            None => self.busy.push_back((s, e)),
            Some(_) => {
                let i = self.busy.partition_point(|&(st, _)| st < s);
                self.busy.insert(i, (s, e));
            }
        }
    }

    /// Forget intervals that ended by `before`.
    fn prune(&mut self, before: Time) {
        while self.busy.front().is_some_and(|b| b.1 <= before) {
            self.busy.pop_front();
        }
    }
}

/// The queue of one process (a Redis shard has one worker; a Cassandra node 32).
#[derive(Clone, Debug)]
pub struct Fifo {
    workers: Vec<Worker>,
    /// The worker to try first.
    next: usize,
    /// The latest arrival seen: workers keep their intervals from `LATE_MAX_US` before it.
    latest: Time,
    /// Service time inside the measuring window, for utilisation.
    busy_us: u64,
    served: u64,
    window: (Time, Time),
}

impl Fifo {
    /// A queue with `workers` workers that accounts utilisation inside `window`.
    pub fn new(workers: u32, window: (Time, Time)) -> Fifo {
        assert!(workers > 0, "a queue needs a worker");
        Fifo {
            workers: vec![Worker::default(); workers as usize],
            next: 0,
            latest: Time::ZERO,
            busy_us: 0,
            served: 0,
            window,
        }
    }

    /// Serve a request arriving at `arrival` that takes `service_us` microseconds: returns
    /// its departure.
    #[inline]
    pub fn serve(&mut self, arrival: Time, service_us: u64) -> Time {
        self.latest = self.latest.max(arrival);
        let floor = Time(self.latest.as_us().saturating_sub(LATE_MAX_US));
        let arrival = arrival.max(floor);
        // Any worker free from the arrival on serves it at once: try the next one in turn
        // before looking for the earliest start.
        let (i, start) = if self.workers[self.next].free_from() <= arrival {
            (self.next, arrival)
        } else {
            self.earliest(arrival, service_us)
        };
        let departure = Time(start.as_us() + service_us);
        let worker = &mut self.workers[i];
        worker.book(start, departure);
        worker.prune(floor);
        self.next = (i + 1) % self.workers.len();
        let (from, until) = self.window;
        if arrival >= from && arrival < until {
            self.served += 1;
        }
        // Busy time inside the window, so that utilisation cannot exceed 100%.
        let (s, e) = (start.max(from), departure.min(until));
        if s < e {
            self.busy_us += e.as_us() - s.as_us();
        }
        departure
    }

    /// The worker that can start earliest, and when.
    fn earliest(&self, arrival: Time, service_us: u64) -> (usize, Time) {
        let n = self.workers.len();
        let mut best = (self.next, self.workers[self.next].fit(arrival, service_us));
        for k in 1..n {
            if best.1 == arrival {
                break;
            }
            let i = (self.next + k) % n;
            let start = self.workers[i].fit(arrival, service_us);
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
    fn a_request_older_than_the_kept_past_is_served_from_its_start() {
        let mut f = Fifo::new(1, (Time::ZERO, Time::NEVER));
        f.serve(Time::from_secs(1), MS);
        let floor = Time::from_secs(1).as_us() - LATE_MAX_US;
        assert_eq!(f.serve(Time::ZERO, MS), Time(floor + MS));
    }
}
