//! The load balancer in front of the chat servers: which server a device's connect goes
//! to. One balancer serves the devices of one client process, as each instance of a fleet
//! of L4 balancers knows only the connections it placed itself (HAProxy's `leastconn`
//! counts its own). Three policies, the card's task 1.1:
//!
//! - `LeastConnections`: the server with the fewest connections this balancer placed.
//!   Keeps the fleet even; after a crash the displaced devices spread over every server,
//!   and a restarted server, empty, takes every new connect until it catches up.
//! - `ConsistentHash`: a ring with virtual nodes, keyed by device; a server that is down or
//!   full is skipped clockwise. Only the crashed server's devices move, and they move to
//!   the servers after it on the ring; the fleet is as even as the ring is.
//! - `Random`: a uniform draw among the servers in service.
//!
//! A server whose connect failed (refused by a dead process's host, or timed out) or
//! whose connection was reset is out of service for one health-check interval; one that
//! refused a connect for being full is skipped for as long. After that it is tried again.

use crate::{fast_range, DeviceId, ServerId, Time};
use rand::Rng;
use std::time::Duration;

/// How the balancer picks a server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    #[default]
    LeastConnections,
    ConsistentHash,
    Random,
}

/// The balancer's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalancerConfig {
    pub placement: Placement,
    /// How long a server that failed or refused stays out of service (default 2 s).
    pub health_check: Duration,
    /// Points per server on the consistent-hash ring (default 100).
    pub virtual_nodes: u32,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            placement: Placement::LeastConnections,
            health_check: Duration::from_secs(2),
            virtual_nodes: 100,
        }
    }
}

/// One balancer's state.
#[derive(Clone, Debug)]
pub struct Balancer {
    config: BalancerConfig,
    servers: u32,
    /// A min-tree over (connections placed, server) for least-connections: leaf `s` at
    /// `servers + s`, each inner node the smaller of its children. A server out of service
    /// carries `u32::MAX` until it is back.
    /// Each entry packs (connections, server) into one integer (`leaf_key`), so that a
    /// comparison is one instruction.
    tree: Vec<u64>,
    /// Connections this balancer placed, per server (attempts included).
    placed: Vec<u32>,
    /// Until when each server is out of service.
    out_until: Vec<Time>,
    /// Servers out of service, to bring back when their time comes; and per server,
    /// whether it is among them.
    out: Vec<u16>,
    is_out: Vec<bool>,
    /// The ring: (point, server), sorted by point.
    ring: Vec<(u64, u16)>,
}

impl Balancer {
    /// A balancer over `servers` chat servers.
    pub fn new(servers: u32, config: BalancerConfig) -> Balancer {
        assert!(servers > 0 && servers <= u32::from(u16::MAX), "a fleet of 1 to 65,535 servers");
        let n = servers as usize;
        let mut tree = vec![u64::MAX; 2 * n];
        for s in 0..n {
            tree[n + s] = leaf_key(0, s as u16);
        }
        for i in (1..n).rev() {
            tree[i] = tree[2 * i].min(tree[2 * i + 1]);
        }
        let ring = if config.placement == Placement::ConsistentHash {
            let mut ring: Vec<(u64, u16)> = (0..servers)
                .flat_map(|s| (0..config.virtual_nodes.max(1)).map(move |v| (ring_point(s, v), s as u16)))
                .collect();
            ring.sort_unstable();
            ring
        } else {
            Vec::new()
        };
        Balancer {
            config,
            servers,
            tree,
            placed: vec![0; n],
            out_until: vec![Time::ZERO; n],
            out: Vec::new(),
            is_out: vec![false; n],
            ring,
        }
    }

    /// The policy.
    pub fn placement(&self) -> Placement {
        self.config.placement
    }

    /// Connections (and attempts) this balancer has placed on `server`.
    pub fn placed(&self, server: ServerId) -> u32 {
        self.placed[usize::from(server.0)]
    }

    /// Whether `server` is in service at `now`.
    pub fn in_service(&self, server: ServerId, now: Time) -> bool {
        self.out_until[usize::from(server.0)] <= now
    }

    /// Pick the server for `device`'s connect at `now`, and count the connection there.
    /// When every server is out of service, the one back soonest is tried.
    pub fn pick(&mut self, now: Time, device: DeviceId, rng: &mut impl Rng) -> ServerId {
        self.bring_back(now);
        let s = match self.config.placement {
            Placement::LeastConnections => {
                let (count, s) = ((self.tree[1] >> 16) as u32, self.tree[1] as u16);
                if count == u32::MAX {
                    self.soonest_back()
                } else {
                    s
                }
            }
            Placement::ConsistentHash => {
                let h = device_point(device);
                let start = self.ring.partition_point(|&(p, _)| p < h);
                let n = self.ring.len();
                (0..n)
                    .map(|k| self.ring[(start + k) % n].1)
                    .find(|&s| self.out_until[usize::from(s)] <= now)
                    .unwrap_or_else(|| self.soonest_back())
            }
            Placement::Random => {
                let draw = rng.random_range(0..self.servers) as u16;
                if self.out_until[usize::from(draw)] <= now {
                    draw
                } else {
                    // Fewer in service: draw among them.
                    let up: Vec<u16> =
                        (0..self.servers as u16).filter(|&s| self.out_until[usize::from(s)] <= now).collect();
                    if up.is_empty() {
                        self.soonest_back()
                    } else {
                        up[fast_range(rng.random::<u64>(), up.len() as u32) as usize]
                    }
                }
            }
        };
        self.placed[usize::from(s)] += 1;
        self.refresh(s);
        ServerId(s)
    }

    /// A connection or attempt placed on `server` ended (closed, refused, failed, reset).
    pub fn release(&mut self, server: ServerId) {
        let s = usize::from(server.0);
        self.placed[s] = self.placed[s].saturating_sub(1);
        self.refresh(server.0);
    }

    /// `server` failed a connect, reset a connection, or refused for being full: it is out
    /// of service until a health check finds it back.
    pub fn take_out(&mut self, server: ServerId, now: Time) {
        let s = usize::from(server.0);
        let until = now + self.config.health_check;
        if self.out_until[s] <= now {
            self.out.push(server.0);
            self.is_out[s] = true;
        }
        self.out_until[s] = self.out_until[s].max(until);
        self.refresh(server.0);
    }

    fn bring_back(&mut self, now: Time) {
        let mut i = 0;
        while i < self.out.len() {
            let s = self.out[i];
            if self.out_until[usize::from(s)] <= now {
                self.out.swap_remove(i);
                self.is_out[usize::from(s)] = false;
                self.refresh(s);
            } else {
                i += 1;
            }
        }
    }

    fn soonest_back(&self) -> u16 {
        (0..self.servers as u16).min_by_key(|&s| (self.out_until[usize::from(s)], s)).expect("a fleet of servers")
    }

    /// Update server `s`'s leaf and its ancestors.
    fn refresh(&mut self, s: u16) {
        let n = self.servers as usize;
        let mut i = n + usize::from(s);
        self.tree[i] = leaf_key(if self.is_out[usize::from(s)] { u32::MAX } else { self.placed[usize::from(s)] }, s);
        while i > 1 {
            i /= 2;
            self.tree[i] = self.tree[2 * i].min(self.tree[2 * i + 1]);
        }
    }
}

/// A least-connections leaf: the count above the server, so that the smaller key is the
/// server with fewer connections, and the lower-numbered one on a tie.
fn leaf_key(count: u32, server: u16) -> u64 {
    (u64::from(count) << 16) | u64::from(server)
}

/// A server's `v`th point on the ring.
fn ring_point(server: u32, v: u32) -> u64 {
    mix((u64::from(server) << 32) | u64::from(v))
}

/// A device's point on the ring.
fn device_point(d: DeviceId) -> u64 {
    mix(0x9e37_79b9_7f4a_7c15 ^ (u64::from(d.user.0) << 8) ^ u64::from(d.slot.0))
}

/// SplitMix64's finaliser: a cheap, well-spread hash.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserId;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn balancer(placement: Placement, servers: u32) -> Balancer {
        Balancer::new(servers, BalancerConfig { placement, ..BalancerConfig::default() })
    }

    fn phone(u: u32) -> DeviceId {
        DeviceId::phone(UserId(u))
    }

    #[test]
    fn least_connections_fills_the_fleet_evenly_and_skips_a_server_out_of_service() {
        let mut b = balancer(Placement::LeastConnections, 4);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let picks: Vec<u16> = (0..8).map(|u| b.pick(Time::ZERO, phone(u), &mut rng).0).collect();
        assert_eq!(picks, vec![0, 1, 2, 3, 0, 1, 2, 3]);
        b.take_out(ServerId(0), Time::ZERO);
        b.release(ServerId(0));
        b.release(ServerId(0));
        let picks: Vec<u16> = (0..3).map(|u| b.pick(Time::from_ms(10), phone(u), &mut rng).0).collect();
        assert!(!picks.contains(&0), "server 0 is out of service: {picks:?}");
        let back = Time::from_secs(3);
        assert_eq!(b.pick(back, phone(9), &mut rng), ServerId(0), "back, and the emptiest");
        assert_eq!(b.pick(back, phone(10), &mut rng), ServerId(0), "still the emptiest: it takes the new connects");
    }

    #[test]
    fn consistent_hashing_moves_only_the_lost_servers_devices() {
        let mut b = balancer(Placement::ConsistentHash, 10);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let before: Vec<u16> = (0..2_000).map(|u| b.pick(Time::ZERO, phone(u), &mut rng).0).collect();
        let per_server = (0..10).map(|s| before.iter().filter(|&&p| p == s).count());
        assert!(per_server.clone().all(|c| (100..=300).contains(&c)), "{:?}", per_server.collect::<Vec<_>>());
        b.take_out(ServerId(4), Time::ZERO);
        let after: Vec<u16> = (0..2_000).map(|u| b.pick(Time::ZERO, phone(u), &mut rng).0).collect();
        for (b4, af) in before.iter().zip(&after) {
            if *b4 == 4 {
                assert_ne!(*af, 4);
            } else {
                assert_eq!(b4, af, "a device of a live server stays put");
            }
        }
    }

    #[test]
    fn random_spreads_and_avoids_a_server_out_of_service() {
        let mut b = balancer(Placement::Random, 5);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        b.take_out(ServerId(2), Time::ZERO);
        let picks: Vec<u16> = (0..1_000).map(|u| b.pick(Time::ZERO, phone(u), &mut rng).0).collect();
        assert!(!picks.contains(&2));
        for s in [0, 1, 3, 4] {
            let c = picks.iter().filter(|&&p| p == s).count();
            assert!((180..=320).contains(&c), "server {s}: {c}");
        }
    }

    #[test]
    fn with_every_server_out_the_one_back_soonest_is_tried() {
        let mut b = balancer(Placement::LeastConnections, 2);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        b.take_out(ServerId(1), Time::ZERO);
        b.take_out(ServerId(0), Time::from_ms(500));
        assert_eq!(b.pick(Time::from_ms(600), phone(1), &mut rng), ServerId(1));
    }
}
