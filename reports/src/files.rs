//! The report folder: summary.json, timing.json, timeseries.csv and .hgrm files.

use crate::summary::Summary;
use crate::table::Timing;
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use wasim_sim::Outcome;

/// The files a report folder holds.
#[derive(Clone, Debug)]
pub struct ReportFiles {
    pub dir: PathBuf,
    pub written: Vec<PathBuf>,
}

/// Write the report folder. Everything but `timing.json` is identical for the same
/// scenario and seed.
pub fn write_report(dir: &Path, outcome: &Outcome, summary: &Summary, timing: &Timing) -> io::Result<ReportFiles> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut put = |name: &str, bytes: Vec<u8>| -> io::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        written.push(path);
        Ok(())
    };
    put("summary.json", json(summary)?)?;
    put("timing.json", json(timing)?)?;
    put("timeseries.csv", timeseries(outcome)?)?;
    for (name, h) in outcome.latencies.named() {
        put(&format!("{name}.hgrm"), hgrm(h).into_bytes())?;
    }
    if !outcome.trace.is_empty() {
        put("trace.csv", trace(outcome)?)?;
    }
    Ok(ReportFiles { dir: dir.to_path_buf(), written })
}

fn json<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(v).map_err(io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn timeseries(o: &Outcome) -> io::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["second", "sends", "sent_acks", "deliveries", "receipts"])?;
    for (i, s) in o.per_second.iter().enumerate().take(o.simulated_s() as usize) {
        w.write_record([
            i.to_string(),
            s.sends.to_string(),
            s.sent_acks.to_string(),
            s.deliveries.to_string(),
            s.receipts.to_string(),
        ])?;
    }
    w.into_inner().map_err(|e| io::Error::other(e.to_string()))
}

/// The traced user's message events: what was queued where, and when.
fn trace(o: &Outcome) -> io::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["time_us", "event", "message", "user", "device", "node"])?;
    for e in &o.trace {
        let device = match e.slot {
            Some(0) => "phone",
            Some(_) => "web",
            None => "",
        };
        w.write_record([
            e.at.as_us().to_string(),
            e.event.to_string(),
            e.msg.map(|m| m.0.to_string()).unwrap_or_default(),
            e.user.0.to_string(),
            device.to_string(),
            o.node_names[usize::from(e.node.0)].clone(),
        ])?;
    }
    w.into_inner().map_err(|e| io::Error::other(e.to_string()))
}

/// HdrHistogram's classic percentile distribution, values in milliseconds.
fn hgrm(h: &Histogram<u64>) -> String {
    let mut o = format!("{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    if h.is_empty() {
        return o;
    }
    let mut total = 0;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 { format!("{:.2}", 1.0 / (1.0 - q)) } else { String::from("inf") };
        let _ = writeln!(o, "{:>12.3} {:>14.12} {:>10} {:>14}", v.value_iterated_to() as f64 / 1_000.0, q, total, inv);
    }
    let _ = writeln!(
        o,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]\n#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.mean() / 1_000.0,
        h.stdev() / 1_000.0,
        h.max() as f64 / 1_000.0,
        h.len()
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_counts_are_cumulative_and_end_at_the_total() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for us in [1_000, 2_000, 2_000, 50_000] {
            h.record(us).unwrap();
        }
        let text = hgrm(&h);
        let counts: Vec<u64> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.trim_start().starts_with("Value"))
            .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        assert_eq!(counts.last(), Some(&4));
        assert!(text.contains("Total count    =            4"), "{text}");
    }

    #[test]
    fn empty_histogram_gives_only_the_header() {
        let h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        assert_eq!(hgrm(&h).lines().count(), 2);
    }
}
