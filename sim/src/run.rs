//! Building the simulated world on madsim, running it, and gathering what it measured.

use crate::check::{check_all, CheckContext, CheckReport, Logs};
use crate::gang::Gang;
use crate::metrics::{Backlog, Counters, Latencies, NodeReport, SecondCounters, SecondLatencies, TraceEvent};
use crate::msg::{Msg, NodeIdx};
use crate::net::Network;
use crate::node::Shared;
use crate::population::Population;
use crate::scenario::Scenario;
use crate::topology::{NodeKind, Topology};
use crate::visits::{OpCounts, OP_KINDS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasim_model::{Time, UserId};

/// How a run is started.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Receives the simulated milliseconds reached, for a progress display that reads the
    /// real clock on another thread.
    pub progress_ms: Option<Arc<AtomicU64>>,
    /// Trace this user's messages (default: the first user a network cut hits).
    pub trace_user: Option<u32>,
    /// Threads that run a tick's processes side by side (0 or 1: the calling thread
    /// alone). The outputs are the same whatever the count.
    pub threads: usize,
}

/// One tier's load, summed over its processes, over the measuring window.
#[derive(Clone, Debug)]
pub struct TierStats {
    pub kind: NodeKind,
    pub nodes: u32,
    pub workers_per_node: u32,
    /// Requests served in the window, all processes.
    pub served: u64,
    /// Mean utilisation of the tier's workers in the window (0..1, can exceed 1 when the
    /// queue grows without bound).
    pub utilisation: f64,
    /// Utilisation of the busiest process.
    pub utilisation_max: f64,
    /// The tier's end-of-run gauge, summed (connections, keys, rows, lag, in-flight).
    pub gauge_end: u64,
    /// Work queued at the end of the measuring window and at the end of the run: replies
    /// not yet sent, summed over the tier's processes, and the longest wait among them.
    pub backlog_window_end: Backlog,
    pub backlog_end: Backlog,
}

/// Everything a run measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub scenario: Scenario,
    pub seed: u64,
    pub node_count: usize,
    /// Each process's name (`chat_server-3`), by network index.
    pub node_names: Vec<String>,
    pub latencies: Latencies,
    pub counters: Counters,
    /// Indexed by simulated second.
    pub per_second: Vec<SecondCounters>,
    pub tiers: Vec<TierStats>,
    /// What the invariant checkers found.
    pub checks: CheckReport,
    /// The traced user's message events in time order (empty without a network cut).
    pub trace: Vec<TraceEvent>,
    /// Operations served in the measuring window, by kind, all processes.
    pub ops: OpCounts,
    /// A calibration run's sojourns (`None` in a scenario run).
    pub calibration: Option<hdrhistogram::Histogram<u64>>,
    /// Processes that filed no report (dead at the end).
    pub silent: Vec<String>,
    /// Connections each chat server held at the end (`None`: dead at the end).
    pub chat_connections_end: Vec<Option<u64>>,
    /// Connections each chat server held at the start of each simulated second (0 while
    /// dead): one series per server.
    pub chat_connections_per_second: Vec<Vec<u32>>,
    /// The slowest hop of the run (its latency with spikes and retransmissions, not a
    /// clog's hold), client-server then in-datacenter, in µs.
    pub slowest_hop_us: [u64; 2],
    /// What the group traffic did (`None`: no groups).
    pub groups: Option<crate::groups::GroupStats>,
    /// Bytes of the group receipts table on all replicas at the end.
    pub receipt_table_bytes: u64,
    /// Latencies by the simulated second their event began, the whole run.
    pub latencies_per_second: SecondLatencies,
    /// Each serving tier's work per simulated second: service time booked by its queues
    /// (the work that arrived), and the tier's capacity (workers x 1 s), in µs.
    pub work_per_second: Vec<TierWork>,
    /// Consumer lag at the start of each simulated second: the `messages` topic, then the
    /// group-messages topic (records appended, not yet committed, all partitions).
    pub kafka_lag_per_second: [Vec<u64>; 2],
    /// Network messages in the measuring window between tiers: (from, to, count), each
    /// pair of tiers that exchanged any, in `NodeKind` order.
    pub flows: Vec<(NodeKind, NodeKind, u64)>,
    /// Times each row of the sender's tick state machine (`SENDER_TRANSITIONS`) fired on
    /// the devices, and moves of the ticks no row allows (a bug).
    pub receipt_transitions: (wasim_model::SenderTransitionCounts, u64),
}

/// A tier's work over time.
#[derive(Clone, Debug)]
pub struct TierWork {
    pub kind: NodeKind,
    /// Workers of all its processes x 1 s, in µs.
    pub capacity_us_per_s: u64,
    /// Service time booked by its queues in each second, in µs.
    pub work_us: Vec<u64>,
}

impl TierWork {
    /// Utilisation in each second: work booked over capacity (above 1 when more work
    /// arrives than the tier can serve).
    pub fn utilisation(&self) -> Vec<f64> {
        self.work_us.iter().map(|&w| w as f64 / self.capacity_us_per_s.max(1) as f64).collect()
    }
}

impl Outcome {
    /// Simulated seconds run (warm-up + duration + drain).
    pub fn simulated_s(&self) -> u64 {
        self.scenario.total_s()
    }
}

/// Run a scenario on a fresh madsim runtime seeded with the run seed.
pub fn run(scenario: &Scenario, options: &RunOptions) -> Outcome {
    let seed = options.seed.unwrap_or(scenario.seed);
    let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    let trace_user = options.trace_user.map(UserId);
    // Made before the simulation starts: madsim forbids spawning threads inside it.
    let gang = Gang::new(options.threads);
    let (mut outcome, mut logs) =
        rt.block_on(simulate_traced(scenario.clone(), seed, options.progress_ms.clone(), trace_user, None, &gang));
    drop(gang);
    // Outside the simulation, where threads are allowed: the checkers use both cores.
    let cx = check_context(&outcome);
    let (checks, firsts) = crate::check::check_all_with_firsts(&mut logs, &cx, true);
    outcome.checks = checks;
    outcome.groups = crate::groups::GroupStats::from_logs(&logs, &firsts, &cx.groups, scenario);
    outcome
}

/// The slowest legitimate delivery to a connected device, before queueing: a margin over
/// the client link's tail (a push and a fetch each cross it), the re-push of an
/// unacknowledged message and a reconnect's catch-up. Generous: a checker must never cry
/// wolf, and a lost message stays lost however long one waits.
const IN_FLIGHT_BOUND_BASE: Duration = Duration::from_secs(10);

/// How long around a chat server's crash receipts may be lost with it, beyond the silence
/// timeout and the queues' backlog: its death is known a datacenter hop after it.
const RECEIPT_CRASH_MARGIN: Duration = Duration::from_secs(2);

/// Windows of simulated time, (from, until).
type Windows = Vec<(Time, Time)>;

/// The windows of presence shards' faults: when users may look offline by design (a
/// failover, a clog between it and the chat servers or a skewed clock, until every key was written again after, a TTL and a
/// heartbeat, plus the in-flight bound), and when a skewed shard's stamps, on its own
/// clock, cannot be ordered against its others (the skew's window widened by the skew both
/// ways, until its keys were written again after).
fn presence_windows(scenario: &Scenario) -> (Windows, Windows) {
    use crate::scenario::Fault;
    let settle = Duration::from_millis(scenario.users.presence_ttl_ms + scenario.users.heartbeat_interval_ms);
    let (mut faulted, mut jumps) = (Vec::new(), Vec::new());
    for f in &scenario.faults {
        // A clog between the chat servers and a presence shard holds its refreshes back as
        // a failover does: keys expire, and the commands held arrive out of their order
        // across servers once it clears.
        let presence_clog = |a: &str, b: &str| a.starts_with("redis_presence") && b.starts_with("chat_server");
        let skew_ms = match *f {
            Fault::RedisDown { ref target, .. } if target.starts_with("redis_presence-") => None,
            Fault::ClockSkew { ref target, skew_ms, .. } if target.starts_with("redis_presence-") => Some(skew_ms),
            Fault::Clog { ref between, ref and, .. } if presence_clog(between, and) || presence_clog(and, between) => {
                None
            }
            _ => continue,
        };
        let (at_s, lasts_s) = f.window_s();
        let settled = Time::from_secs(at_s + lasts_s) + settle;
        faulted.push((Time::from_secs(at_s), settled + IN_FLIGHT_BOUND_BASE));
        if let Some(skew_ms) = skew_ms {
            let off = Duration::from_millis(skew_ms.unsigned_abs());
            jumps.push((Time::from_secs(at_s) - off, settled + off));
        }
    }
    (faulted, jumps)
}

/// When a receipt may die with a chat server (receipts have no replay, README): issued
/// from a silence timeout before a chat server's crash (it may have held the receipt for
/// a sender whose connection had died unnoticed) until its death is known (receipts on
/// their way to it, or relayed to it before the other servers learn it is down; after
/// that they go through the session store), each widened by `margin`.
fn receipt_windows(scenario: &Scenario, margin: Duration) -> Windows {
    use crate::scenario::Fault;
    let held = Duration::from_millis(scenario.users.presence_ttl_ms) + margin;
    let mut windows = Vec::new();
    for f in &scenario.faults {
        if let Fault::Crash { ref target, .. } = *f {
            if target.starts_with("chat_server") {
                let down = Time::from_secs(f.window_s().0);
                windows.push((down - held, down + margin));
            }
        }
    }
    windows
}

/// When each chat server that crashes is down: (server, down, back up).
fn servers_down(scenario: &Scenario) -> Vec<(wasim_model::ServerId, Time, Time)> {
    let topo = Topology::new(scenario);
    crate::faults::FaultPlan::new(scenario, &topo)
        .crashes()
        .iter()
        .filter_map(|c| c.server.map(|server| (server, c.down, c.up)))
        .collect()
}

/// By chat server: the most its clock ran ahead in the scenario's skew faults, in ms.
fn mint_ahead_ms(scenario: &Scenario) -> Vec<u64> {
    let mut ahead = vec![0; scenario.fleet.chat_servers as usize];
    for f in &scenario.faults {
        if let crate::scenario::Fault::ClockSkew { ref target, skew_ms, .. } = *f {
            if let Ok((NodeKind::ChatServer, i)) = crate::limits::skew_target(scenario, target) {
                ahead[i as usize] = ahead[i as usize].max(skew_ms.max(0) as u64);
            }
        }
    }
    ahead
}

/// When each user's session shard last came back from a failover before the end.
fn session_back(scenario: &Scenario) -> Box<dyn Fn(UserId) -> Time + Send + Sync> {
    let end = scenario.total_s();
    let mut back = vec![Time::ZERO; scenario.fleet.redis_session_shards as usize];
    for f in &scenario.faults {
        if let crate::scenario::Fault::RedisDown { at_s, failover_s, ref target, .. } = *f {
            if let Ok((NodeKind::Redis, shard)) = crate::limits::redis_target(scenario, target) {
                if at_s < end {
                    let b = &mut back[shard as usize];
                    *b = (*b).max(Time::from_secs((at_s + failover_s).min(end)));
                }
            }
        }
    }
    let topo = Topology::new(scenario);
    Box::new(move |u| back[topo.locate(topo.redis(u)).1 as usize])
}

fn check_context(outcome: &Outcome) -> CheckContext {
    let scenario = &outcome.scenario;
    let population = Population::new(scenario);
    let (presence_faulted, presence_clock_jumps) = presence_windows(scenario);
    // A message may wait in each tier's queue in turn: add every tier's backlog at the end
    // (but the media tiers': a message waits for its upload before it is sent, not after).
    let backlog_us: u64 = outcome
        .tiers
        .iter()
        .filter(|t| !matches!(t.kind, NodeKind::Api | NodeKind::ObjectStore | NodeKind::Cdn))
        .map(|t| t.backlog_end.wait_us)
        .sum();
    // A chain crosses up to 4 client links and 8 inside the datacenter, each at its p99;
    // the slowest hop the run made (a heavy tail's rare extreme, or a packet retransmitted
    // through a lossy link: legitimate) may be one.
    let (client_p99_us, dc_p99_us) =
        (scenario.network.client_server_ms.p99() * 1e3, scenario.network.in_datacenter_ms.p99() * 1e3);
    let [slowest_client_us, slowest_dc_us] = outcome.slowest_hop_us.map(|us| us as f64);
    let links_us =
        3.0 * client_p99_us + slowest_client_us.max(client_p99_us) + 7.0 * dc_p99_us + slowest_dc_us.max(dc_p99_us);
    // A device whose server's host was lost notices only when a heartbeat goes unanswered
    // (or, after the restart, is reset): until then it holds a half-open connection, and
    // what is routed to it waits in the inbox for its reconnect.
    let half_open = scenario
        .faults
        .iter()
        .any(|f| matches!(f, crate::scenario::Fault::Crash { detect: crate::scenario::Detect::Timeout, .. }));
    let detection_us =
        if half_open { (scenario.users.heartbeat_interval_ms + scenario.users.ping_timeout_ms) * 1_000 } else { 0 };
    CheckContext {
        end: Time::from_secs(scenario.total_s()),
        quorum: scenario.fleet.cassandra_replication_factor / 2 + 1,
        in_flight_bound: IN_FLIGHT_BOUND_BASE + Duration::from_micros(backlog_us + links_us as u64 + detection_us),
        // Around a crash: a few datacenter hops and the queues' backlog.
        receipts_unprotected: receipt_windows(scenario, RECEIPT_CRASH_MARGIN + Duration::from_micros(backlog_us)),
        presence_ttl: Duration::from_millis(scenario.users.presence_ttl_ms),
        presence_faulted,
        presence_clock_jumps,
        groups: crate::groups::Groups::new(scenario, outcome.seed),
        mint_ahead_ms: mint_ahead_ms(scenario),
        servers_down: servers_down(scenario),
        session_back: session_back(scenario),
        hides_last_seen: Box::new(move |u| population.hides_last_seen(u)),
    }
}

/// Run a scenario inside the current madsim runtime (for `Runtime::check_determinism`).
pub async fn simulate(scenario: Scenario, seed: u64, progress_ms: Option<Arc<AtomicU64>>) -> Outcome {
    let (mut outcome, mut logs) = simulate_traced(scenario, seed, progress_ms, None, None, &Gang::new(1)).await;
    outcome.checks = check_all(&mut logs, &check_context(&outcome), false);
    outcome
}

/// A calibration run: the probe in place of the client shard, no invariants checked (the
/// probe makes no promises to check).
pub(crate) fn simulate_with_probe(scenario: &Scenario, seed: u64, probe: crate::calibrate::ProbePlan) -> Outcome {
    let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.block_on(simulate_traced(scenario.clone(), seed, None, None, Some(probe), &Gang::new(1))).0
}

async fn simulate_traced(
    scenario: Scenario,
    seed: u64,
    progress_ms: Option<Arc<AtomicU64>>,
    trace_user: Option<UserId>,
    probe: Option<crate::calibrate::ProbePlan>,
    gang: &Gang,
) -> (Outcome, Logs) {
    let topo = Arc::new(Topology::new(&scenario));
    let plan = Plan::new(&topo, gang.threads());
    let nodes = topo.node_count();
    let tick_us = scenario.tick_us;
    let end_tick = scenario.total_s() * 1_000_000 / tick_us;
    let progress_ms = progress_ms.unwrap_or_default();
    let population = Population::new(&scenario);
    let traced = trace_user.or(population.first_cut_user());
    let faults = crate::faults::FaultPlan::new(&scenario, &topo);
    let ranges =
        (0..scenario.fleet.cassandra_nodes).map(|_| Mutex::new(crate::nodes::cassandra::range(&scenario))).collect();
    let disks = (0..scenario.fleet.cassandra_nodes).map(|_| Mutex::default()).collect();
    let kafka_logs = (0..topo.all_partitions()).map(|_| Mutex::default()).collect();
    let (per_partition, forwards) = (scenario.routed_per_partition(), scenario.forwards_per_partition());
    let routed = (0..scenario.fleet.kafka_partitions)
        .map(|_| Mutex::new(wasim_model::RoutedMemory::with_capacity(per_partition, forwards)))
        .collect();
    let repaired = (0..scenario.fleet.cassandra_nodes).map(|_| AtomicU64::new(0)).collect();
    let shared = Arc::new(Shared {
        faults,
        ranges,
        disks,
        past_seconds: Mutex::default(),
        kafka_logs,
        routed,
        aliases: Mutex::default(),
        repaired,
        slowest_hop_us: [AtomicU64::new(0), AtomicU64::new(0)],
        chat_connections: (0..u64::from(scenario.fleet.chat_servers) * (scenario.total_s() + 1))
            .map(|_| std::sync::atomic::AtomicU32::new(0))
            .collect(),
        work_us: (0..nodes as u64 * (scenario.total_s() + 1)).map(|_| AtomicU64::new(0)).collect(),
        kinds: (0..nodes).map(|i| topo.locate(NodeIdx(i as u16)).0).collect(),
        population,
        groups: crate::groups::Groups::new(&scenario, seed),
        traced: AtomicU64::new(traced.map_or(u64::MAX, |u| u64::from(u.0))),
        procs: (0..nodes).map(|_| Mutex::new(None)).collect(),
        trace_a_crash: traced.is_none() && scenario.crashes_a_chat_server(),
        net: Network::new(&plan.part_of, tick_us),
        topo: topo.clone(),
        scenario: scenario.clone(),
        seed,
        clock: Default::default(),
        tick_us,
        reports: Mutex::new(vec![None; nodes]),
        progress_ms: progress_ms.clone(),
        probe,
    });
    let handle = madsim::runtime::Handle::current();
    let mut ids = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let me = NodeIdx(i as u16);
        let (kind, k) = topo.locate(me);
        let s = shared.clone();
        let node = handle
            .create_node()
            .name(format!("{}-{k}", kind.name()))
            .init(move || crate::nodes::start(s.clone(), me))
            .build();
        ids.push(node.id());
    }
    // The supervisor drives the logical clock: one madsim sleep per tick, then every live
    // process's tick, side by side on the gang. Crashes happen between ticks: a killed
    // process loses its memory and what was on its way to it; a restarted one starts
    // empty from the scenario, like a fresh process (its node's task builds it during a
    // yield, before the tick it was restarted for).
    let tick = Duration::from_micros(tick_us);
    // Consumer lag of each topic at the start of each simulated second.
    let mut lag = KafkaLag::default();
    let mut dead_traces = Vec::new();
    while shared.clock.now() < end_tick {
        madsim::time::sleep(tick).await;
        let mut restarted = Vec::new();
        for event in shared.faults.process_events(shared.clock.now() + 1) {
            match event {
                crate::faults::ProcessEvent::Kill(n) => {
                    handle.kill(ids[usize::from(n.0)]);
                    let killed = shared.procs[usize::from(n.0)].lock().expect("process lock").take();
                    // Its memory dies with it, but not what trace.csv saw it do.
                    if let Some(mut runner) = killed {
                        dead_traces.append(&mut runner.take_trace());
                    }
                    shared.net.clear(n);
                }
                crate::faults::ProcessEvent::Restart(n) => {
                    if let (NodeKind::Cassandra, i) = shared.topo.locate(n) {
                        let rows = crate::nodes::cassandra::repair(&shared, i);
                        shared.repaired[i as usize].store(rows, Ordering::Relaxed);
                    }
                    *shared.procs[usize::from(n.0)].lock().expect("process lock") = None;
                    handle.restart(ids[usize::from(n.0)]);
                    restarted.push(n);
                }
            }
        }
        let t = shared.clock.advance();
        if !restarted.is_empty() {
            Built { shared: &shared, nodes: &restarted }.await;
        }
        plan.run_tick(&shared, gang, t);
        shared.progress_ms.store(t * tick_us / 1_000, Ordering::Relaxed);
        lag.sample(&shared, t * tick_us);
    }
    let end = shared.clock.now();
    for slot in &shared.procs {
        let runner = slot.lock().expect("process lock").take();
        if let Some(runner) = runner {
            runner.file(&shared, end);
        }
    }
    let (mut outcome, logs) = collect(&shared, scenario, seed);
    outcome.kafka_lag_per_second = [lag.messages, lag.group_messages];
    if !dead_traces.is_empty() {
        outcome.trace.append(&mut dead_traces);
        outcome.trace.sort_by_key(|e: &TraceEvent| (e.at, e.node, e.event));
    }
    (outcome, logs)
}

/// The consumer lag of the Kafka topics (records appended and not yet committed, all
/// partitions), sampled at the start of each simulated second.
#[derive(Default)]
struct KafkaLag {
    messages: Vec<u64>,
    group_messages: Vec<u64>,
}

impl KafkaLag {
    /// Sample at `now_us` if a second began since the last sample.
    fn sample(&mut self, shared: &Shared, now_us: u64) {
        let second = (now_us / 1_000_000) as usize;
        if self.messages.len() > second {
            return;
        }
        let (mut messages, mut groups) = (0, 0);
        for (p, log) in shared.kafka_logs.iter().enumerate() {
            let lag = log.lock().expect("log lock").lag();
            if (p as u32) < shared.topo.partitions {
                messages += lag;
            } else {
                groups += lag;
            }
        }
        // Seconds a long tick skipped hold the same value.
        self.messages.resize(second + 1, messages);
        self.group_messages.resize(second + 1, groups);
    }
}

/// Resolves once the processes `nodes` are built: their restarted nodes' tasks run while
/// the supervisor yields (no simulated time passes).
struct Built<'a> {
    shared: &'a Shared,
    nodes: &'a [NodeIdx],
}

impl std::future::Future for Built<'_> {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let built = |n: &NodeIdx| self.shared.procs[usize::from(n.0)].lock().expect("process lock").is_some();
        if self.nodes.iter().all(built) {
            return std::task::Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// How a tick is spread over the gang's threads: the processes in parts, one per thread,
/// balanced by a rough weight per kind (client shards heaviest, then chat servers). The
/// Kafka brokers and the routers share the partition logs and the routers' memory (a
/// router taking a partition over reads the offset its broker commits, within a tick), so
/// they are all in one part and run in process order, and what one reads of the other does
/// not depend on the threads. So are the Cassandra nodes, which share their ranges' rows
/// (a history page counts the rows its partition holds, written by any replica). Within a
/// part, processes run in index order.
struct Plan {
    /// Each process's part.
    part_of: Vec<u16>,
    /// The processes of each part, in index order.
    parts: Vec<Vec<NodeIdx>>,
}

impl Plan {
    fn new(topo: &Topology, threads: usize) -> Plan {
        let n = topo.node_count();
        let parts = threads.clamp(1, n.max(1));
        let mut part_of = vec![0u16; n];
        let mut load = vec![0u32; parts];
        let lightest = |weight: u32, load: &mut Vec<u32>| {
            let p = (0..parts).min_by_key(|&p| (load[p], p)).expect("a part");
            load[p] += weight;
            p as u16
        };
        let weight = |kind: NodeKind| match kind {
            NodeKind::ClientShard => 4,
            NodeKind::ChatServer => 2,
            _ => 1,
        };
        let mut shared_logs = Vec::new();
        let kinds =
            [NodeKind::ClientShard, NodeKind::ChatServer, NodeKind::Redis, NodeKind::Presence, NodeKind::Fanout];
        for kind in kinds {
            for i in (0..n).filter(|&i| topo.locate(NodeIdx(i as u16)).0 == kind) {
                part_of[i] = lightest(weight(kind), &mut load);
            }
        }
        for i in 0..n {
            if matches!(topo.locate(NodeIdx(i as u16)).0, NodeKind::Kafka | NodeKind::Router) {
                shared_logs.push(i);
            }
        }
        let shared_rows: Vec<usize> =
            (0..n).filter(|&i| topo.locate(NodeIdx(i as u16)).0 == NodeKind::Cassandra).collect();
        for group in [shared_rows, shared_logs] {
            let p = lightest(group.len() as u32, &mut load);
            for i in group {
                part_of[i] = p;
            }
        }
        // More threads than groups to place leave parts empty: numbered without them, so
        // that every part (and the network's part for it) holds a process.
        let mut renumbered = vec![u16::MAX; parts];
        let mut by_part: Vec<Vec<NodeIdx>> = Vec::new();
        for (i, p) in part_of.iter_mut().enumerate() {
            let q = &mut renumbered[usize::from(*p)];
            if *q == u16::MAX {
                *q = by_part.len() as u16;
                by_part.push(Vec::new());
            }
            *p = *q;
            by_part[usize::from(*q)].push(NodeIdx(i as u16));
        }
        Plan { part_of, parts: by_part }
    }

    /// Run tick `t` of every live process, each part on a thread of the gang: take the
    /// mail of the last tick, then each process's arrivals, tick and sends.
    fn run_tick(&self, shared: &Shared, gang: &Gang, t: u64) {
        let procs = &shared.procs;
        gang.run(self.parts.len(), &|k| {
            let mut part = shared.net.part(k);
            shared.net.receive_mail(&mut part, t);
            for n in &self.parts[k] {
                if let Some(runner) = procs[usize::from(n.0)].lock().expect("process lock").as_mut() {
                    runner.take(&mut part, t);
                    runner.run_tick(shared, t);
                    runner.deliver(shared, &mut part, t);
                }
            }
            shared.net.post_mail(&mut part, t);
        });
    }
}

/// Gather the processes' reports; the checkers run on the returned logs afterwards.
fn collect(shared: &Shared, scenario: Scenario, seed: u64) -> (Outcome, Logs) {
    // A process dead at the end files no report; one that restarted files what it saw
    // since (what it measured before it was killed died with it).
    let filed: Vec<Option<NodeReport>> = std::mem::take(&mut *shared.reports.lock().expect("reports lock"));
    let silent: Vec<usize> = filed.iter().enumerate().filter(|(_, r)| r.is_none()).map(|(i, _)| i).collect();
    let chat_connections_end: Vec<Option<u64>> = filed
        .iter()
        .enumerate()
        .filter(|&(i, _)| shared.topo.chat_server_of(NodeIdx(i as u16)).is_some())
        .map(|(_, r)| r.as_ref().map(|r| r.gauge_end))
        .collect();
    let mut reports: Vec<NodeReport> = filed.into_iter().flatten().collect();
    let mut latencies = Latencies::default();
    let mut counters = Counters::default();
    let mut per_second = vec![SecondCounters::default(); scenario.total_s() as usize + 1];
    let mut logs = Logs::gather(reports.iter_mut().map(|r| std::mem::take(&mut r.logs)).collect());
    let mut trace = Vec::new();
    for r in &mut reports {
        trace.append(&mut r.trace);
    }
    {
        let net = &shared.net;
        logs.in_transit.extend(net.message_ids(Msg::message_id));
        logs.receipts_in_transit.extend(net.message_ids(Msg::receipt_message_id));
        logs.closing_in_transit.extend(net.message_ids(Msg::closed_device));
        logs.caught_up_in_transit.extend(net.message_ids(Msg::caught_up_device));
        // A message a router or a fan-out still holds at the end, waiting on a request or a
        // reply that is still on its way (a hop retransmitted for seconds through a lossy
        // link), is in flight; one held for a request that is gone is not.
        let mut requests = std::mem::take(&mut logs.requests_in_transit);
        requests.extend(net.awaited_requests().into_iter().map(|(node, req)| (node.0, req)));
        requests.sort_unstable();
        let waiting = std::mem::take(&mut logs.messages_awaiting);
        let in_flight = waiting.iter().filter(|&&(_, node, req)| requests.binary_search(&(node, req)).is_ok());
        logs.in_transit.extend(in_flight.map(|&(id, _, _)| id));
    }
    // A partition whose consumer is dead at the end, its group not yet rebalanced (the
    // session timeout has not passed), holds its uncommitted records for the router that
    // takes it over: in flight, not lost. So does one whose leader is dead at the end with
    // no other broker to take over (the log is durable; it is read again once the broker
    // is back).
    let end = Time::from_secs(scenario.total_s());
    for (p, log) in shared.kafka_logs.iter().enumerate() {
        let p = p as u32;
        if shared.faults.is_down(shared.consumer(p, end), end) || shared.faults.is_down(shared.broker(p, end), end) {
            logs.in_transit.extend(log.lock().expect("log lock").uncommitted().map(|m| m.id));
        }
        // So are the replays a dead router left unanswered: its partition's next router
        // asks again for them.
        if let Some(memory) = shared.routed.get(p as usize) {
            if shared.faults.is_down(shared.consumer(p, end), end) {
                logs.in_transit.extend(memory.lock().expect("memory lock").rerouting());
            }
        }
    }
    let mut receipt_table_bytes = 0;
    for range in &shared.ranges {
        let mut range = range.lock().expect("range lock");
        debug_assert!(logs.conversations_one_in == shared.scenario.checked_one_in());
        logs.stored.extend(range.followed_ids());
        // What outlives processes is freed now, not when the runtime (whose restart hooks
        // hold the shared state) goes: the checkers' peak comes next.
        *range = Default::default();
    }
    for (node, disk) in shared.disks.iter().enumerate() {
        let mut disk = disk.lock().expect("disk lock");
        receipt_table_bytes += disk.group_receipts_bytes();
        logs.replica_writes.extend(disk.sampled_writes().iter().map(|&(id, at)| (id, node as u32, at)));
        // What outlives processes is freed now, not when the runtime (whose restart hooks
        // hold the shared state) goes: the checkers' peak comes next.
        *disk = Default::default();
    }
    for store in &shared.routed {
        *store.lock().expect("memory lock") = Default::default();
    }
    for log in &shared.kafka_logs {
        *log.lock().expect("log lock") = Default::default();
    }
    logs.aliases.append(&mut shared.aliases.lock().expect("aliases lock"));
    trace.sort_by_key(|e: &TraceEvent| (e.at, e.node, e.event));
    let mut ops: OpCounts = [0; OP_KINDS];
    let mut calibration: Option<hdrhistogram::Histogram<u64>> = None;
    for r in &mut reports {
        if let Some(h) = r.sojourns.take() {
            match &mut calibration {
                Some(c) => c.add(&h).expect("same bounds"),
                None => calibration = Some(h),
            }
        }
    }
    // The seconds the client shards handed on as the run went, then their recent ones.
    let mut latencies_per_second = std::mem::take(&mut *shared.past_seconds.lock().expect("seconds lock"));
    let mut arrivals = [[0u64; NodeKind::ALL.len()]; NodeKind::ALL.len()];
    let mut receipt_transitions = ([0; wasim_model::SENDER_TRANSITIONS.len()], 0);
    for r in &reports {
        for (a, b) in arrivals[r.kind as usize].iter_mut().zip(r.arrivals_from) {
            *a += b;
        }
        if let Some(l) = &r.latencies_per_second {
            latencies_per_second.add(l);
        }
        if let Some((fired, off)) = r.receipt_transitions {
            for (a, b) in receipt_transitions.0.iter_mut().zip(fired) {
                *a += b;
            }
            receipt_transitions.1 += off;
        }
        for (a, b) in ops.iter_mut().zip(r.ops) {
            *a += b;
        }
        counters.add(&r.counters);
        if let Some(l) = &r.latencies {
            latencies.add(l);
        }
        for (acc, s) in per_second.iter_mut().zip(&r.per_second) {
            acc.add(s);
        }
    }
    let window_us = scenario.duration_s as f64 * 1e6;
    let tiers: Vec<TierStats> = NodeKind::ALL
        .iter()
        .filter(|&&k| k != NodeKind::ClientShard)
        // The media tiers are listed only when the run has media.
        .filter(|&&k| !matches!(k, NodeKind::Api | NodeKind::ObjectStore | NodeKind::Cdn) || scenario.media.on())
        .map(|&kind| {
            let of_kind: Vec<&NodeReport> = reports.iter().filter(|r| r.kind == kind).collect();
            let util = |r: &NodeReport| r.busy_us as f64 / (window_us * f64::from(r.workers.max(1)));
            let workers: u64 = of_kind.iter().map(|r| u64::from(r.workers)).sum();
            TierStats {
                kind,
                nodes: of_kind.len() as u32,
                workers_per_node: of_kind.first().map_or(0, |r| r.workers),
                served: of_kind.iter().map(|r| r.served).sum(),
                utilisation: of_kind.iter().map(|r| r.busy_us as f64).sum::<f64>()
                    / (window_us * workers.max(1) as f64),
                utilisation_max: of_kind.iter().map(|r| util(r)).fold(0.0, f64::max),
                gauge_end: of_kind.iter().map(|r| r.gauge_end).sum(),
                backlog_window_end: Backlog::sum(of_kind.iter().map(|r| r.backlog_window_end)),
                backlog_end: Backlog::sum(of_kind.iter().map(|r| r.backlog_end)),
            }
        })
        .collect();
    let node_names: Vec<String> = (0..shared.topo.node_count())
        .map(|i| {
            let (kind, k) = shared.topo.locate(NodeIdx(i as u16));
            format!("{}-{k}", kind.name())
        })
        .collect();
    let flows = NodeKind::ALL
        .iter()
        .flat_map(|&from| NodeKind::ALL.iter().map(move |&to| (from, to)))
        .map(|(from, to)| (from, to, arrivals[to as usize][from as usize]))
        .filter(|&(_, _, n)| n > 0)
        .collect();
    let seconds = scenario.total_s() as usize + 1;
    let work_per_second = NodeKind::ALL
        .iter()
        .filter(|&&k| k != NodeKind::ClientShard)
        .filter_map(|&kind| {
            let (first, count) = shared.topo.range(kind);
            let workers = tiers.iter().find(|t: &&TierStats| t.kind == kind).map_or(0, |t| t.workers_per_node);
            if count == 0 || workers == 0 {
                return None;
            }
            let mut work_us = vec![0u64; seconds];
            for n in usize::from(first)..usize::from(first + count) {
                for (w, slot) in work_us.iter_mut().zip(&shared.work_us[n * seconds..(n + 1) * seconds]) {
                    *w += slot.load(Ordering::Relaxed);
                }
            }
            work_us.truncate(seconds - 1);
            Some(TierWork { kind, capacity_us_per_s: u64::from(count) * u64::from(workers) * 1_000_000, work_us })
        })
        .collect();
    let checks = CheckReport::default();
    let outcome = Outcome {
        latencies_per_second,
        work_per_second,
        kafka_lag_per_second: Default::default(),
        flows,
        receipt_transitions,
        silent: silent.into_iter().map(|i| node_names[i].clone()).collect(),
        chat_connections_end,
        chat_connections_per_second: {
            let seconds = scenario.total_s() as usize + 1;
            shared
                .chat_connections
                .chunks(seconds)
                .map(|s| s.iter().map(|c| c.load(Ordering::Relaxed)).collect())
                .collect()
        },
        slowest_hop_us: shared.slowest_hop_us.each_ref().map(|a| a.load(Ordering::Relaxed)),
        groups: None,
        receipt_table_bytes,
        scenario,
        seed,
        node_count: shared.topo.node_count(),
        node_names,
        latencies,
        counters,
        per_second,
        tiers,
        checks,
        trace,
        ops,
        calibration,
    };
    (outcome, logs)
}
