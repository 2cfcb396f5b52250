//! The design card's "Scale & Estimation" table, recomputed from its inputs.
//!
//! Each row carries the card's own value (as printed), the value recomputed from the
//! inputs with the formula shown beside it, and a flag where the two disagree or where the
//! card's assumptions contradict each other. With the card's inputs the table reproduces
//! the card (and its slips); with a scenario's, every row moves with the inputs.

/// What the estimate is computed from. `card()` holds the card's numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct EstimateInputs {
    /// Registered users.
    pub users: f64,
    /// Daily active users.
    pub dau: f64,
    /// Users connected at the peak (one WebSocket each).
    pub concurrent: f64,
    /// Messages sent a day.
    pub messages_per_day: f64,
    /// Bytes of a stored text message (the storage rows).
    pub message_bytes: f64,
    /// Bytes of a Kafka record (the Kafka row: the card's "1 KB avg").
    pub kafka_record_bytes: f64,
    /// Cassandra replicas of each row.
    pub replication: f64,
    /// Kafka replicas of each record.
    pub kafka_replication: f64,
    /// Years of history kept.
    pub years: f64,
    /// Usable storage of one Cassandra node, in bytes.
    pub node_bytes: f64,
    /// WebSocket connections one chat server holds.
    pub connections_per_server: f64,
    /// Bytes of one `session:{user}` entry.
    pub session_bytes: f64,
    /// Seconds between presence heartbeats.
    pub heartbeat_s: f64,
    /// Operations a second one presence Redis node serves.
    pub presence_ops_per_node: f64,
    /// Groups with traffic, their members, and messages a group a second.
    pub groups_active: f64,
    pub group_members: f64,
    pub group_messages_per_s: f64,
    /// Share of members online (pushed; the others get an inbox pointer).
    pub online_share: f64,
    /// Short polling's interval, long polling's proxy timeout, in seconds.
    pub poll_interval_s: f64,
    pub long_poll_timeout_s: f64,
    /// Share of messages carrying media, their mean size after encryption, and the devices
    /// that download each (the card names none of these: assumed).
    pub media_share: f64,
    pub media_bytes: f64,
    pub media_downloads: f64,
}

impl EstimateInputs {
    /// The card's numbers (spec: "Requirements" and "Scale & Estimation").
    pub fn card() -> EstimateInputs {
        EstimateInputs {
            users: 2e9,
            dau: 100e6,
            concurrent: 100e6,
            messages_per_day: 100e9,
            message_bytes: 100.0,
            kafka_record_bytes: 1_000.0,
            replication: 3.0,
            kafka_replication: 3.0,
            years: 5.0,
            node_bytes: 100e12,
            connections_per_server: 100e3,
            session_bytes: 50.0,
            heartbeat_s: 30.0,
            presence_ops_per_node: 300e3,
            groups_active: 1_000.0,
            group_members: 1_024.0,
            group_messages_per_s: 1.0,
            online_share: 0.5,
            poll_interval_s: 1.0,
            long_poll_timeout_s: 30.0,
            media_share: 0.1,
            media_bytes: 500e3,
            media_downloads: 1.2,
        }
    }
}

/// A row of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct EstimateRow {
    pub component: &'static str,
    /// The card's value as printed, and as a number in `unit` (`None`: the card has no row).
    pub card_text: Option<&'static str>,
    pub card: Option<f64>,
    /// The value recomputed from the inputs, in `unit`.
    pub value: f64,
    pub unit: &'static str,
    /// How `value` is computed, with the inputs' values.
    pub formula: String,
    /// Where the card and the recomputation disagree (by more than 5%) or the card
    /// contradicts itself.
    pub flag: Option<String>,
}

/// Seconds a day.
pub const DAY_S: f64 = 86_400.0;

/// Relative disagreement above which a row is flagged (the card rounds to two figures).
const TOLERANCE: f64 = 0.05;

/// `v` in engineering form for formulas: 1.16M, 30T, 547.5.
pub fn si(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e15 {
        (v / 1e15, "P")
    } else if a >= 1e12 {
        (v / 1e12, "T")
    } else if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "K")
    } else {
        (v, "")
    };
    let text = format!("{scaled:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

/// Bytes in engineering form: 100 B, 1 KB, 30 TB, 54.75 PB.
pub fn si_bytes(v: f64) -> String {
    let text = si(v);
    match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => format!("{} {c}B", &text[..i]),
        _ => format!("{text} B"),
    }
}

fn row(
    component: &'static str,
    card: Option<(&'static str, f64)>,
    value: f64,
    unit: &'static str,
    formula: String,
) -> EstimateRow {
    let flag = card.and_then(|(text, c)| {
        // "10+" is a floor: any value at or above it agrees.
        let floor = text.contains('+');
        let off = (value - c) / c;
        let disagrees = if floor { value < c } else { off.abs() > TOLERANCE };
        disagrees.then(|| {
            format!("the card's {} is {:+.0}% off the recomputed {}", si(c), (c - value) / value * 100.0, si(value))
        })
    });
    EstimateRow { component, card_text: card.map(|c| c.0), card: card.map(|c| c.1), value, unit, formula, flag }
}

/// The card's estimation rows, recomputed from `i`, in the card's order, then the rows the
/// card states elsewhere (fan-out, availability).
///
/// With `against_card`, a row whose recomputed value is off the card's is flagged (the
/// card's arithmetic); without (a scenario's inputs, a scale model), only the card's
/// contradictions are.
pub fn estimate(i: &EstimateInputs, against_card: bool) -> Vec<EstimateRow> {
    let msgs = i.messages_per_day / DAY_S;
    let text_day = msgs * i.message_bytes * DAY_S;
    let replicated_day = text_day * i.replication;
    let history = replicated_day * 365.0 * i.years;
    let presence = i.concurrent / i.heartbeat_s;
    let mut rows = vec![
        row(
            "Chat servers",
            Some(("~1,000", 1_000.0)),
            (i.concurrent / i.connections_per_server).ceil(),
            "servers",
            format!(
                "ceil({} concurrent users / {} WebSocket connections a server)",
                si(i.concurrent),
                si(i.connections_per_server)
            ),
        ),
        row(
            "Message throughput",
            Some(("1.16M msg/sec", 1.16e6)),
            msgs,
            "msg/s",
            format!("{} messages a day / 86,400 s", si(i.messages_per_day)),
        ),
        row(
            "Text storage a day",
            Some(("10 TB/day", 10e12)),
            text_day,
            "bytes/day",
            format!("{} msg/s × {} × 86,400 s", si(msgs), si_bytes(i.message_bytes)),
        ),
        row(
            "With Cassandra replication",
            Some(("30 TB/day", 30e12)),
            replicated_day,
            "bytes/day",
            format!("{}/day × {} replicas", si_bytes(text_day), i.replication),
        ),
        row(
            "History kept",
            Some(("55 PB", 55e15)),
            history,
            "bytes",
            format!("{}/day × 365 × {} years", si_bytes(replicated_day), i.years),
        ),
        row(
            "Cassandra nodes",
            Some(("~500 nodes", 500.0)),
            (history / i.node_bytes).ceil(),
            "nodes",
            format!("ceil({} / {} a node)", si_bytes(history), si_bytes(i.node_bytes)),
        ),
        row(
            "Session store (Redis)",
            Some(("5 GB", 5e9)),
            i.concurrent * i.session_bytes,
            "bytes",
            format!("{} sessions × {}", si(i.concurrent), si_bytes(i.session_bytes)),
        ),
        row(
            "Presence writes",
            Some(("3.3M/sec", 3.3e6)),
            presence,
            "writes/s",
            format!("{} online users / {} s heartbeat", si(i.concurrent), i.heartbeat_s),
        ),
        row(
            "Presence Redis nodes",
            Some(("10+ nodes", 10.0)),
            (presence / i.presence_ops_per_node).ceil(),
            "nodes",
            format!("ceil({} writes/s / {} ops/s a node)", si(presence), si(i.presence_ops_per_node)),
        ),
        row(
            "Kafka throughput",
            Some(("~1.2 GB/sec", 1.2e9)),
            msgs * i.kafka_record_bytes * i.kafka_replication,
            "bytes/s",
            format!("{} msg/s × {} × {} replicas", si(msgs), si_bytes(i.kafka_record_bytes), i.kafka_replication),
        ),
        row(
            "Group fan-out pushes",
            None,
            i.groups_active * i.group_messages_per_s * (i.group_members - 1.0).max(0.0) * i.online_share,
            "pushes/s",
            format!(
                "{} groups × {} msg/s × ({} members - the sender) × {} online",
                si(i.groups_active),
                i.group_messages_per_s,
                si(i.group_members),
                i.online_share
            ),
        ),
    ];
    if i.media_share > 0.0 {
        rows.extend(media_rows(i, msgs, against_card));
    }
    if !against_card {
        for r in &mut rows {
            r.flag = None;
        }
    }
    // The card's own slips, whatever the inputs.
    let kafka = rows.iter_mut().find(|r| r.component == "Kafka throughput").expect("a Kafka row");
    if i.kafka_record_bytes != i.message_bytes {
        let note = format!(
            "it sizes a message at {} for Kafka but {} for storage",
            si_bytes(i.kafka_record_bytes),
            si_bytes(i.message_bytes)
        );
        kafka.flag = Some(match kafka.flag.take() {
            Some(f) => format!(
                "{f} (the card's figure is {}/s, without the ×{} replicas); {note}",
                si_bytes(msgs * i.kafka_record_bytes),
                i.kafka_replication
            ),
            None => note,
        });
    }
    if (i.dau - i.concurrent).abs() < f64::EPSILON * i.dau.max(1.0) {
        let chat = rows.iter_mut().find(|r| r.component == "Chat servers").expect("a chat server row");
        chat.flag = Some(format!(
            "it takes {} DAU as {} concurrent: every daily user online at once",
            si(i.dau),
            si(i.concurrent)
        ));
    }
    rows
}

/// The media pipeline's rows (the card's "Media never touches Chat Servers — S3
/// pre-signed URL + CDN"; it gives no volumes, so none is checked against it).
/// `assumed`: the inputs are the card's, which names no media volume (else a scenario's).
fn media_rows(i: &EstimateInputs, msgs: f64, assumed: bool) -> Vec<EstimateRow> {
    let said = if assumed { " (assumed: the card gives none)" } else { "" };
    let uploads = msgs * i.media_share;
    let ingest = uploads * i.media_bytes;
    let day = ingest * DAY_S;
    let frame = f64::from(crate::FRAME_HEADER_BYTES);
    vec![
        row(
            "Media uploads",
            None,
            uploads,
            "uploads/s",
            format!("{} msg/s × {} carrying media{said}", si(msgs), i.media_share),
        ),
        row(
            "Object-store ingest",
            None,
            ingest,
            "bytes/s",
            format!("{} uploads/s × {} a file on average, encrypted{said}", si(uploads), si_bytes(i.media_bytes)),
        ),
        row("Media storage a day", None, day, "bytes/day", format!("{}/s × 86,400 s", si_bytes(ingest))),
        row(
            "Media kept",
            None,
            day * 365.0 * i.years,
            "bytes",
            format!("{}/day × 365 × {} years (one copy; the store replicates inside)", si_bytes(day), i.years),
        ),
        row(
            "CDN egress",
            None,
            ingest * i.media_downloads,
            "bytes/s",
            format!("{}/s × {:.2} devices downloading each{said}", si_bytes(ingest), i.media_downloads),
        ),
        row(
            "Chat-server bytes of a media message",
            None,
            frame + f64::from(crate::MediaKind::Image.thumbnail_bytes()),
            "bytes",
            format!(
                "a {} frame + a {} thumbnail: the reference, never the {} file",
                si_bytes(frame),
                si_bytes(f64::from(crate::MediaKind::Image.thumbnail_bytes())),
                si_bytes(i.media_bytes)
            ),
        ),
    ]
}

/// One way of getting messages to devices, from the card's comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct TransportRow {
    pub transport: &'static str,
    /// Requests (or frames) a second at the server.
    pub requests_per_s: f64,
    /// Share of them that carry no message.
    pub empty_share: f64,
    /// The longest a message waits for its device, in seconds, past the network (0 where
    /// it waits for nothing but a round trip or a push), and in words.
    pub worst_latency_s: f64,
    pub worst_wait: String,
    pub formula: String,
}

/// Short polling, long polling and WebSockets for the same users and messages (each
/// message delivered to one device).
pub fn transports(i: &EstimateInputs) -> Vec<TransportRow> {
    let msgs = i.messages_per_day / DAY_S;
    let polls = i.concurrent / i.poll_interval_s;
    let timeouts = i.concurrent / i.long_poll_timeout_s;
    let beats = i.concurrent / i.heartbeat_s;
    vec![
        TransportRow {
            transport: "Short polling",
            requests_per_s: polls,
            empty_share: (1.0 - msgs / polls).max(0.0),
            worst_latency_s: i.poll_interval_s,
            worst_wait: format!("{} s", i.poll_interval_s),
            formula: format!("{} users / {} s interval; a message waits up to one interval", si(i.concurrent), i.poll_interval_s),
        },
        TransportRow {
            transport: "Long polling",
            requests_per_s: msgs + timeouts,
            empty_share: timeouts / (msgs + timeouts),
            // The next message waits for the device's next request: one round trip.
            worst_latency_s: 0.0,
            worst_wait: "a round trip".into(),
            formula: format!(
                "{} msg/s answered + {} users / {} s proxy timeout; a message waits for the next request (a round trip)",
                si(msgs),
                si(i.concurrent),
                i.long_poll_timeout_s
            ),
        },
        TransportRow {
            transport: "WebSockets",
            requests_per_s: msgs + beats,
            empty_share: beats / (msgs + beats),
            worst_latency_s: 0.0,
            worst_wait: "none: pushed".into(),
            formula: format!(
                "{} msg/s pushed + {} users / {} s heartbeat pings; a message is pushed at once",
                si(msgs),
                si(i.concurrent),
                i.heartbeat_s
            ),
        },
    ]
}

/// Downtime a year allowed by an availability target (0.9999: 52.6 minutes).
pub fn downtime_s_per_year(availability: f64) -> f64 {
    (1.0 - availability) * 365.0 * DAY_S
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(rows: &[EstimateRow], component: &str) -> f64 {
        rows.iter().find(|r| r.component == component).unwrap_or_else(|| panic!("{component}")).value
    }

    fn flag(rows: &[EstimateRow], component: &str) -> Option<String> {
        rows.iter().find(|r| r.component == component).and_then(|r| r.flag.clone())
    }

    /// Each row worked out by hand from the card's numbers.
    #[test]
    fn media_rows_follow_their_inputs_and_say_what_is_assumed() {
        let card = estimate(&EstimateInputs::card(), true);
        let value = |rows: &[EstimateRow], name: &str| rows.iter().find(|r| r.component == name).expect(name).value;
        let msgs = 100e9 / DAY_S;
        assert!((value(&card, "Media uploads") - msgs * 0.1).abs() < 1.0);
        assert!((value(&card, "Object-store ingest") - msgs * 0.1 * 500e3).abs() < 1e3);
        assert!((value(&card, "Media storage a day") - msgs * 0.1 * 500e3 * DAY_S).abs() < 1e9);
        assert!((value(&card, "CDN egress") - msgs * 0.1 * 500e3 * 1.2).abs() < 1e3);
        let said = card.iter().find(|r| r.component == "Media uploads").unwrap();
        assert!(said.formula.contains("assumed") && said.card.is_none(), "{said:?}");
        // A scenario's own figures are not called assumed; no media, no media rows.
        let own = estimate(&EstimateInputs { media_share: 0.4, ..EstimateInputs::card() }, false);
        assert!(!own.iter().any(|r| r.formula.contains("assumed")));
        let none = estimate(&EstimateInputs { media_share: 0.0, ..EstimateInputs::card() }, true);
        assert!(!none.iter().any(|r| r.component.contains("Media")));
        // The chat server carries a frame and a thumbnail, a hundred times less than a file.
        assert!(value(&card, "Chat-server bytes of a media message") * 50.0 < 500e3);
    }

    #[test]
    fn the_cards_inputs_give_the_cards_rows_worked_by_hand() {
        let rows = estimate(&EstimateInputs::card(), true);
        assert_eq!(value(&rows, "Chat servers"), 1_000.0); // 100,000,000 / 100,000
        assert!((value(&rows, "Message throughput") - 1_157_407.407).abs() < 0.01); // 1e11 / 86,400
        assert!((value(&rows, "Text storage a day") - 1e13).abs() < 1.0); // 1e11 msg × 100 B
        assert!((value(&rows, "With Cassandra replication") - 3e13).abs() < 1.0);
        assert!((value(&rows, "History kept") - 5.475e16).abs() < 10.0); // 3e13 × 1,825 days
        assert_eq!(value(&rows, "Cassandra nodes"), 548.0); // 54.75 PB / 100 TB = 547.5
        assert_eq!(value(&rows, "Session store (Redis)"), 5e9); // 1e8 × 50 B
        assert!((value(&rows, "Presence writes") - 3_333_333.333).abs() < 0.01); // 1e8 / 30
        assert_eq!(value(&rows, "Presence Redis nodes"), 12.0); // 3.33M / 300K = 11.1
        assert!((value(&rows, "Kafka throughput") - 3_472_222_222.2).abs() < 1.0); // 1.157M × 1 KB × 3
        assert_eq!(value(&rows, "Group fan-out pushes"), 511_500.0); // 1,000 × 1 × 1,023 × 0.5
    }

    #[test]
    fn the_cards_slips_are_flagged_and_its_consistent_rows_are_not() {
        let rows = estimate(&EstimateInputs::card(), true);
        for ok in ["Message throughput", "Text storage a day", "With Cassandra replication", "Session store (Redis)"] {
            assert_eq!(flag(&rows, ok), None, "{ok}");
        }
        let kafka = flag(&rows, "Kafka throughput").expect("the Kafka row is off");
        assert!(kafka.contains("1 KB"), "{kafka}");
        assert!(kafka.contains("100 B"), "names the two message sizes: {kafka}");
        assert!(flag(&rows, "Chat servers").expect("DAU = concurrent").contains("every daily user online"));
        // 548 against ~500: the card rounds 547.5 down by 9%.
        assert!(flag(&rows, "Cassandra nodes").expect("500 against 548").contains("-9%"));
        assert_eq!(flag(&rows, "Presence Redis nodes"), None, "12 is 10+");
        let fewer = estimate(&EstimateInputs { presence_ops_per_node: 1e6, ..EstimateInputs::card() }, true);
        assert!(flag(&fewer, "Presence Redis nodes").is_some(), "4 is not 10+");
    }

    #[test]
    fn every_row_moves_with_its_inputs() {
        let card = estimate(&EstimateInputs::card(), true);
        let slower_beat = estimate(&EstimateInputs { heartbeat_s: 60.0, ..EstimateInputs::card() }, true);
        assert!((value(&slower_beat, "Presence writes") - 1_666_666.667).abs() < 0.01);
        assert_eq!(value(&slower_beat, "Presence Redis nodes"), 6.0); // 1.67M / 300K = 5.6
        let half = estimate(&EstimateInputs { concurrent: 50e6, dau: 50e6, ..EstimateInputs::card() }, true);
        assert_eq!(value(&half, "Chat servers"), 500.0);
        assert_eq!(value(&half, "Session store (Redis)"), 2.5e9);
        assert_eq!(value(&card, "Chat servers"), 1_000.0);
    }

    #[test]
    fn transports_worked_by_hand() {
        let t = transports(&EstimateInputs::card());
        // Short polling: 1e8 / 1 s = 1e8 requests a second; 1.157M carry a message.
        assert_eq!(t[0].requests_per_s, 1e8);
        assert!((t[0].empty_share - (1.0 - 1_157_407.407 / 1e8)).abs() < 1e-9);
        assert_eq!(t[0].worst_latency_s, 1.0);
        // Long polling: 1.157M answered + 1e8 / 30 = 3.33M timeouts.
        assert!((t[1].requests_per_s - (1_157_407.407 + 3_333_333.333)).abs() < 0.01);
        // WebSockets: 1.157M pushes + 3.33M heartbeats; nothing waits for a request.
        assert!((t[2].empty_share - 3_333_333.333 / (1_157_407.407 + 3_333_333.333)).abs() < 1e-9);
        assert!((downtime_s_per_year(0.9999) - 3_153.6).abs() < 1e-6); // 52.56 minutes
    }

    #[test]
    fn a_scale_model_is_not_flagged_for_being_smaller_than_the_card() {
        let small = EstimateInputs { concurrent: 500e3, dau: 1e6, messages_per_day: 1e8, ..EstimateInputs::card() };
        let rows = estimate(&small, false);
        assert_eq!(flag(&rows, "Cassandra nodes"), None);
        assert_eq!(flag(&rows, "Chat servers"), None, "1M DAU, 500K online: no contradiction");
        assert!(flag(&rows, "Kafka throughput").expect("the sizes still differ").contains("1 KB for Kafka but 100 B"));
    }

    #[test]
    fn si_prints_engineering_units() {
        assert_eq!(si_bytes(1_000.0), "1 KB");
        assert_eq!(si_bytes(100.0), "100 B");
        assert_eq!(si(1_157_407.4), "1.157M");
        assert_eq!(si(3e13), "30T");
        assert_eq!(si(547.5), "547.5");
        assert_eq!(si(5.475e16), "54.75P");
    }
}
