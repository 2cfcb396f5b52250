//! The card's diagrams drawn from a run: the architecture (every tier of the simulated
//! fleet, every flow between tiers labelled with the messages a second it carried) and the
//! receipt state machine (the model's transition table, each transition with the times it
//! fired). Each as a Mermaid block for report.md and as an SVG file.

use crate::summary::Summary;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// A tier's name in the diagrams.
fn label(tier: &str) -> &'static str {
    match tier {
        "client_shard" => "clients",
        "chat_server" => "chat servers",
        "redis_session" => "session store (Redis)",
        "redis_presence" => "presence (Redis)",
        "cassandra" => "Cassandra",
        "kafka" => "Kafka",
        "router" => "routers",
        "fanout" => "group fan-out",
        _ => "?",
    }
}

/// The second line of a tier's box: how many processes, and the users for the clients.
fn count(s: &Summary, tier: &str) -> String {
    let f = &s.scenario.fleet;
    match tier {
        "client_shard" => format!(
            "{} users, {} shard{}",
            wasim_sim::thousands(s.scenario.users.concurrent),
            f.client_shards,
            if f.client_shards == 1 { "" } else { "s" }
        ),
        _ => {
            let nodes = s.tiers.iter().find(|t| t.tier == tier).map_or(0, |t| t.nodes);
            format!("× {nodes}")
        }
    }
}

/// A rate, short: 1.2K/s, 345/s, 0.5/s.
pub fn rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.1}M/s", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1}K/s", per_s / 1e3)
    } else if per_s >= 10.0 {
        format!("{per_s:.0}/s")
    } else {
        format!("{per_s:.1}/s")
    }
}

/// The tiers in the diagram: the clients, then every tier with a process.
fn tiers(s: &Summary) -> Vec<&'static str> {
    let mut t = vec!["client_shard"];
    t.extend(s.tiers.iter().filter(|t| t.nodes > 0).map(|t| t.tier));
    t
}

/// The architecture as a Mermaid flowchart.
pub fn architecture_mermaid(s: &Summary) -> String {
    let mut o = String::from("flowchart LR\n");
    for t in tiers(s) {
        o += &format!("    {t}[\"{}<br/>{}\"]\n", label(t), count(s, t));
    }
    for f in &s.flows {
        o += &format!("    {} -->|\"{}\"| {}\n", f.from, rate(f.messages_per_s), f.to);
    }
    o
}

/// Where each tier's box goes on the architecture canvas (chosen so that no flow's line
/// crosses a box it does not join).
fn position(tier: &str) -> (i32, i32) {
    match tier {
        "client_shard" => (100, 330),
        "chat_server" => (350, 330),
        "kafka" => (620, 140),
        "router" => (880, 140),
        "redis_session" => (880, 330),
        "redis_presence" => (620, 450),
        "cassandra" => (350, 560),
        "fanout" => (880, 560),
        _ => (500, 40),
    }
}

const BOX: (i32, i32) = (180, 54);

fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw_box(root: &Area<'_>, at: (i32, i32), lines: [&str; 2], fill: RGBColor) {
    let (w, h) = BOX;
    let corners = [(at.0 - w / 2, at.1 - h / 2), (at.0 + w / 2, at.1 + h / 2)];
    root.draw(&Rectangle::new(corners, fill.filled())).expect("an SVG in memory");
    root.draw(&Rectangle::new(corners, BLACK.stroke_width(1))).expect("an SVG in memory");
    root.draw(&Text::new(lines[0].to_string(), (at.0, at.1 - 9), font(15))).expect("an SVG in memory");
    root.draw(&Text::new(lines[1].to_string(), (at.0, at.1 + 11), font(12))).expect("an SVG in memory");
}

/// Where the segment from the centre `c` towards `to` leaves a box around `c`.
fn edge_of_box(c: (f64, f64), to: (f64, f64), half: (f64, f64)) -> (f64, f64) {
    let (dx, dy) = (to.0 - c.0, to.1 - c.1);
    let t = (half.0 / dx.abs().max(1e-9)).min(half.1 / dy.abs().max(1e-9));
    (c.0 + dx * t, c.1 + dy * t)
}

/// An arrow from `a` to `b` with its head at `b`, and `text` beside it.
fn arrow(root: &Area<'_>, a: (f64, f64), b: (f64, f64), text: &str, colour: RGBColor, label_at: f64) {
    let p = |x: (f64, f64)| (x.0.round() as i32, x.1.round() as i32);
    root.draw(&PathElement::new(vec![p(a), p(b)], colour.stroke_width(2))).expect("an SVG in memory");
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len = (dx * dx + dy * dy).sqrt().max(1e-9);
    let (ux, uy) = (dx / len, dy / len);
    let head = [
        p(b),
        p((b.0 - 11.0 * ux - 5.0 * uy, b.1 - 11.0 * uy + 5.0 * ux)),
        p((b.0 - 11.0 * ux + 5.0 * uy, b.1 - 11.0 * uy - 5.0 * ux)),
    ];
    root.draw(&Polygon::new(head.to_vec(), colour.filled())).expect("an SVG in memory");
    // The label sits beside the line, on its right-hand side seen along it.
    let at = (a.0 + dx * label_at - 13.0 * uy, a.1 + dy * label_at + 13.0 * ux);
    root.draw(&Text::new(text.to_string(), p(at), font(12).color(&colour))).expect("an SVG in memory");
}

/// The architecture as an SVG drawing.
pub fn architecture_svg(s: &Summary) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 640)).into_drawing_area();
        root.fill(&WHITE).expect("an SVG in memory");
        let title = format!(
            "Architecture as run: {}, seed {} (messages a second between tiers, measured window)",
            s.scenario_name, s.seed
        );
        root.draw(&Text::new(title, (500, 24), font(16))).expect("an SVG in memory");
        let half = (f64::from(BOX.0) / 2.0 + 4.0, f64::from(BOX.1) / 2.0 + 4.0);
        let centre = |t: &str| {
            let (x, y) = position(t);
            (f64::from(x), f64::from(y))
        };
        let colours = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
        let mut loops = Vec::new();
        for (k, f) in s.flows.iter().enumerate() {
            if f.from == f.to {
                loops.push(f);
                continue;
            }
            let (a, b) = (centre(f.from), centre(f.to));
            let (dx, dy) = (b.0 - a.0, b.1 - a.1);
            let len = (dx * dx + dy * dy).sqrt().max(1e-9);
            // The two directions of a pair side by side, each offset to its right.
            let (ox, oy) = (-dy / len * 7.0, dx / len * 7.0);
            let (a, b) = ((a.0 + ox, a.1 + oy), (b.0 + ox, b.1 + oy));
            let from = edge_of_box(a, b, half);
            let to = edge_of_box(b, a, half);
            arrow(&root, from, to, &rate(f.messages_per_s), colours[k % colours.len()], 0.35);
        }
        for t in tiers(s) {
            let fill = if t == "client_shard" { RGBColor(255, 243, 205) } else { RGBColor(220, 235, 250) };
            draw_box(&root, position(t), [label(t), &count(s, t)], fill);
        }
        for (i, f) in loops.iter().enumerate() {
            let (x, y) = position(f.from);
            let text = format!("↻ {} to {}: {}", label(f.from), label(f.to), rate(f.messages_per_s));
            let at = (x - BOX.0 / 2 - 20, y - BOX.1 / 2 - 14 - 16 * i as i32);
            root.draw(&Text::new(text, at, font(12))).expect("an SVG in memory");
        }
        let note = "Each arrow: network messages a second from one tier to another, all processes of both, in the measuring window.";
        root.draw(&Text::new(note, (500, 620), font(12))).expect("an SVG in memory");
        root.present().expect("an SVG in memory");
    }
    svg
}

/// Mermaid ids of the tick states.
fn state_id(name: &str) -> &'static str {
    match name {
        "in flight" => "in_flight",
        n if n.starts_with("sent") => "sent",
        n if n.starts_with("delivered") => "delivered",
        _ => "read",
    }
}

/// The sender's tick state machine as a Mermaid state diagram.
pub fn receipts_mermaid(s: &Summary) -> String {
    let m = &s.receipt_state_machine;
    let mut o = String::from("stateDiagram-v2\n    direction LR\n");
    let mut states: Vec<&str> = Vec::new();
    for t in &m.transitions {
        for name in [t.from, t.to] {
            if !states.contains(&name) {
                states.push(name);
            }
        }
    }
    for name in &states {
        o += &format!("    state \"{name}\" as {}\n", state_id(name));
    }
    o += &format!("    [*] --> in_flight: send × {}\n", wasim_sim::thousands(s.counters.sends));
    for t in &m.transitions {
        o += &format!(
            "    {} --> {}: {} × {}\n",
            state_id(t.from),
            state_id(t.to),
            t.event,
            wasim_sim::thousands(t.fired)
        );
    }
    o
}

/// The sender's tick state machine as an SVG drawing: the states in a row, a transition
/// to the next state straight, one that skips a state over or under the row.
pub fn receipts_svg(s: &Summary) -> String {
    let m = &s.receipt_state_machine;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 470)).into_drawing_area();
        root.fill(&WHITE).expect("an SVG in memory");
        let title = format!("Receipt state machine (the sender's ticks) as run: {}, seed {}", s.scenario_name, s.seed);
        root.draw(&Text::new(title, (500, 24), font(16))).expect("an SVG in memory");
        let order = ["in flight", "sent", "delivered", "read"];
        let x_of = |name: &str| 200 + 220 * order.iter().position(|o| name.starts_with(o)).unwrap_or(0) as i32;
        let y = 250;
        let colours = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
        let (w, h) = (BOX.0 - 20, BOX.1);
        // Skips over the row at these heights (and under it), in the order they come.
        let (mut over, mut under) = (0, 0);
        for (k, t) in m.transitions.iter().enumerate() {
            let (a, b) = (x_of(t.from), x_of(t.to));
            let colour = colours[k % colours.len()];
            let text = format!("{} × {}", t.event, wasim_sim::thousands(t.fired));
            if b - a <= 220 {
                arrow(
                    &root,
                    (f64::from(a + w / 2), f64::from(y)),
                    (f64::from(b - w / 2), f64::from(y)),
                    "",
                    colour,
                    0.5,
                );
                root.draw(&Text::new(text, ((a + b) / 2, y - 42), font(12).color(&colour))).expect("an SVG in memory");
                continue;
            }
            // From the in-flight state the skips go over the row, the others under it.
            let from_start = t.from == "in flight";
            let (level, side) = if from_start {
                over += 1;
                (y - h / 2 - 40 * over - 20, -1)
            } else {
                under += 1;
                (y + h / 2 + 40 * under + 20, 1)
            };
            let edge = y + side * h / 2;
            // The outer a skip, the further out it starts, so that skips do not cross.
            let (a0, b0) = (a + if from_start { 40 - 40 * over } else { 30 }, b - 30 + 20 * over);
            let path = vec![(a0, edge), (a0, level), (b0, level)];
            root.draw(&PathElement::new(path, colour.stroke_width(2))).expect("an SVG in memory");
            arrow(&root, (f64::from(b0), f64::from(level)), (f64::from(b0), f64::from(edge)), "", colour, 0.5);
            root.draw(&Text::new(text, ((a0 + b0) / 2, level + side * 12), font(12).color(&colour)))
                .expect("an SVG in memory");
        }
        for name in m.transitions.iter().flat_map(|t| [t.from, t.to]) {
            let x = x_of(name);
            let corners = [(x - w / 2, y - h / 2), (x + w / 2, y + h / 2)];
            root.draw(&Rectangle::new(corners, RGBColor(220, 235, 250).filled())).expect("an SVG in memory");
            root.draw(&Rectangle::new(corners, BLACK.stroke_width(1))).expect("an SVG in memory");
            root.draw(&Text::new(name.to_string(), (x, y), font(15))).expect("an SVG in memory");
        }
        let sends = format!("send × {}", wasim_sim::thousands(s.counters.sends));
        arrow(&root, (20.0, f64::from(y)), (f64::from(x_of("in flight") - w / 2), f64::from(y)), "", BLACK, 0.5);
        root.draw(&Text::new(sends, (62, y + 22), font(12))).expect("an SVG in memory");
        let note = format!(
            "From the model's transition table (SENDER_TRANSITIONS); counts over every device and the whole run. Moves outside the table: {}.",
            m.off_table
        );
        root.draw(&Text::new(note, (500, 450), font(12))).expect("an SVG in memory");
        root.present().expect("an SVG in memory");
    }
    svg
}
