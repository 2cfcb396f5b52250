//! A FIFO queue in front of `c` identical workers, with exact times: a request that
//! arrives at `t` departs at `max(t, earliest free worker) + service`.

use wasim_model::Time;

/// The queue of one process (a Redis shard has one worker; a Cassandra node 32).
#[derive(Clone, Debug)]
pub struct Fifo {
    busy_until: Vec<Time>,
    /// The worker to try first.
    next: usize,
    /// Service time accumulated inside the measuring window, for utilisation.
    busy_us: u64,
    served: u64,
    window: (Time, Time),
}

impl Fifo {
    /// A queue with `workers` workers that accounts utilisation inside `window`.
    pub fn new(workers: u32, window: (Time, Time)) -> Fifo {
        assert!(workers > 0, "a queue needs a worker");
        Fifo { busy_until: vec![Time::ZERO; workers as usize], next: 0, busy_us: 0, served: 0, window }
    }

    /// Serve a request arriving at `arrival` that takes `service_us` microseconds: returns
    /// its departure.
    #[inline]
    pub fn serve(&mut self, arrival: Time, service_us: u64) -> Time {
        // Any idle worker starts the request at its arrival: try the next one in turn
        // before scanning for the earliest-free worker.
        let (i, free_at) = if self.busy_until[self.next] <= arrival {
            (self.next, self.busy_until[self.next])
        } else {
            self.busy_until.iter().copied().enumerate().min_by_key(|&(_, t)| t).expect("at least one worker")
        };
        self.next = (i + 1) % self.busy_until.len();
        let start = free_at.max(arrival);
        let departure = Time(start.as_us() + service_us);
        self.busy_until[i] = departure;
        if arrival >= self.window.0 && arrival < self.window.1 {
            self.busy_us += departure.as_us() - start.as_us();
            self.served += 1;
        }
        departure
    }

    /// Workers of this queue.
    pub fn workers(&self) -> u32 {
        self.busy_until.len() as u32
    }

    /// Service time spent on requests that arrived in the window, in µs.
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
    fn utilisation_counts_only_the_window() {
        let mut f = Fifo::new(1, (Time::from_ms(5), Time::from_ms(10)));
        f.serve(Time::ZERO, MS);
        f.serve(Time::from_ms(6), MS);
        f.serve(Time::from_ms(10), MS);
        assert_eq!((f.busy_us(), f.served()), (1_000, 1));
    }
}
