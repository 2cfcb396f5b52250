//! The calibration table: each single-tier run beside its M/M/c closed form.

use std::fmt::Write;
use wasim_sim::calibrate::{RowResult, SERVICE_MEAN_US};

/// Whether every row is within `tolerance` (a fraction) on mean, p50 and p99.
pub fn calibration_passes(rows: &[RowResult], tolerance: f64) -> bool {
    rows.iter().all(|r| r.worst_error() <= tolerance)
}

/// The table, one row per run, with a verdict line.
pub fn render_calibration(rows: &[RowResult], tolerance: f64) -> String {
    let mut o = String::new();
    let link_ms = rows.first().map_or(0.0, |r| r.row.link_ms);
    let _ = writeln!(
        o,
        "Calibration: single-tier runs against M/M/c (Erlang C; M/M/1 at one worker).\n\
         The tier under test serves with exponential service, mean {SERVICE_MEAN_US} µs; every other tier\n\
         serves in no time and every link takes a constant {link_ms} ms. Sojourn = time in queue + service,\n\
         µs, simulated / closed form (relative error). Tolerance {:.0}%.\n",
        tolerance * 100.0
    );
    let _ = writeln!(
        o,
        "{:<14} {:>2} {:>5} {:>10} {:>9}  {:>26}  {:>26}  {:>26}  util",
        "tier", "c", "ρ", "visits", "seen by", "mean", "p50", "p99"
    );
    for r in rows {
        let cell = |sim: f64, formula: f64, err: f64| format!("{sim:.1} / {formula:.1} ({:+.1}%)", err * 100.0);
        let flag = if r.worst_error() <= tolerance { "" } else { "  OUT OF TOLERANCE" };
        let _ = writeln!(
            o,
            "{:<14} {:>2} {:>5.2} {:>10} {:>9}  {:>26}  {:>26}  {:>26}  {:.3}{flag}",
            r.row.tier.name(),
            r.row.workers,
            r.row.rho,
            r.measured,
            r.seen_by,
            cell(r.simulated.mean_us, r.closed_form.mean_us, r.error.mean_us),
            cell(r.simulated.p50_us, r.closed_form.p50_us, r.error.p50_us),
            cell(r.simulated.p99_us, r.closed_form.p99_us, r.error.p99_us),
            r.utilisation,
        );
    }
    let worst = rows.iter().map(RowResult::worst_error).fold(0.0, f64::max);
    let out = rows.iter().filter(|r| r.worst_error() > tolerance).count();
    let _ = writeln!(
        o,
        "\n{}: {} rows, {out} out of tolerance; largest error {:.2}%",
        if out == 0 { "PASS" } else { "FAIL" },
        rows.len(),
        worst * 100.0
    );
    o
}
