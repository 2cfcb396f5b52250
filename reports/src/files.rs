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

/// Write the report folder whole (see [`ReportDir`]). Everything but `timing.json` is
/// identical for the same scenario and seed.
pub fn write_report(dir: &Path, outcome: &Outcome, summary: &Summary, timing: &Timing) -> io::Result<ReportFiles> {
    ReportDir::prepare(dir)?.write(outcome, summary, timing)
}

/// A report folder, written whole or not at all. [`ReportDir::prepare`] checks before a
/// run that the folder can be written (so a bad `--out` fails before the simulation, not
/// after it); [`ReportDir::write`] puts every file into a hidden sibling folder on the same
/// file system and then swaps it into place, so that no file of an earlier report (a
/// `trace.csv` of a run that traced a user) survives beside the new ones, and a failed
/// write leaves the earlier report as it was.
#[derive(Clone, Debug)]
pub struct ReportDir {
    dir: PathBuf,
    /// `.<name>.tmp-<pid>` beside the folder: the new report while it is written.
    staging: PathBuf,
    /// `.<name>.old-<pid>` beside the folder: the earlier report while the new one moves in.
    retired: PathBuf,
}

/// Files that wasim writes into a report folder. Only a folder holding nothing else is
/// replaced: `--out ~/Documents` must fail, not delete the user's files. Extend this when
/// the report gains a kind of file.
fn is_report_file(name: &str) -> bool {
    matches!(name, "summary.json" | "timing.json" | "timeseries.csv" | "trace.csv" | "report.md")
        || [".hgrm", ".hgrm.tmp", ".svg"].iter().any(|ext| name.ends_with(ext))
}

fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl ReportDir {
    /// Check that `dir` can be written and may be replaced: create its parent, probe that
    /// a sibling folder can be made there, and refuse an existing `dir` that holds files
    /// wasim did not write.
    pub fn prepare(dir: &Path) -> io::Result<ReportDir> {
        let name = dir.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "must end in a folder name (not `.`, `..` or `/`)")
        })?;
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if parent.exists() && !parent.is_dir() {
            let why = format!("{} is a file, not a folder", parent.display());
            return Err(io::Error::new(io::ErrorKind::NotADirectory, why));
        }
        std::fs::create_dir_all(&parent).map_err(|e| context(e, format!("cannot create {}", parent.display())))?;
        let sibling = |kind: &str| {
            let mut n = std::ffi::OsString::from(".");
            n.push(name);
            n.push(format!(".{kind}-{}", std::process::id()));
            parent.join(n)
        };
        let report = ReportDir { dir: dir.to_path_buf(), staging: sibling("tmp"), retired: sibling("old") };
        report.check_replaceable()?;
        report.fresh_staging()?;
        std::fs::remove_dir(&report.staging)?;
        Ok(report)
    }

    /// The folder the report goes to.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Refuse to replace anything but a folder of report files (or nothing).
    fn check_replaceable(&self) -> io::Result<()> {
        let refuse = |why: String| Err(io::Error::new(io::ErrorKind::AlreadyExists, why));
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(_) if self.dir.exists() && !self.dir.is_dir() => return refuse("exists and is not a folder".into()),
            Err(e) => return Err(context(e, format!("cannot read {}", self.dir.display()))),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type()?.is_file() || !is_report_file(&name) {
                return refuse(format!(
                    "holds `{name}`, which wasim does not write: refusing to replace the folder (choose another --out, or empty it)"
                ));
            }
        }
        Ok(())
    }

    /// Make an empty staging folder (removing one a crashed run with our pid left).
    fn fresh_staging(&self) -> io::Result<()> {
        if self.staging.exists() {
            std::fs::remove_dir_all(&self.staging)?;
        }
        std::fs::create_dir(&self.staging).map_err(|e| {
            let parent = self.staging.parent().unwrap_or(Path::new("."));
            context(e, format!("cannot create a folder in {}", parent.display()))
        })
    }

    /// Write every file, then swap the new folder into place.
    pub fn write(&self, outcome: &Outcome, summary: &Summary, timing: &Timing) -> io::Result<ReportFiles> {
        self.check_replaceable()?;
        self.fresh_staging()?;
        let names = match write_files(&self.staging, outcome, summary, timing) {
            Ok(names) => names,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&self.staging);
                return Err(e);
            }
        };
        self.swap_in()?;
        Ok(ReportFiles { dir: self.dir.clone(), written: names.iter().map(|n| self.dir.join(n)).collect() })
    }

    /// Move the earlier report aside, the new one in, and delete the earlier one; if the
    /// new one cannot move in, the earlier one goes back.
    fn swap_in(&self) -> io::Result<()> {
        let had_report = self.dir.exists();
        if had_report {
            std::fs::rename(&self.dir, &self.retired)?;
        }
        if let Err(e) = std::fs::rename(&self.staging, &self.dir) {
            if had_report {
                let _ = std::fs::rename(&self.retired, &self.dir);
            }
            let _ = std::fs::remove_dir_all(&self.staging);
            return Err(e);
        }
        if had_report {
            std::fs::remove_dir_all(&self.retired)?;
        }
        Ok(())
    }
}

/// Write the report's files into `dir`; returns their names.
fn write_files(dir: &Path, outcome: &Outcome, summary: &Summary, timing: &Timing) -> io::Result<Vec<String>> {
    let mut written = Vec::new();
    let mut put = |name: &str, bytes: Vec<u8>| -> io::Result<()> {
        std::fs::write(dir.join(name), bytes)?;
        written.push(name.to_string());
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
    let plots = plots(outcome, summary);
    let names: Vec<String> = plots.iter().map(|(name, _)| name.clone()).collect();
    for (name, svg) in plots {
        put(&name, svg.into_bytes())?;
    }
    put("architecture.svg", crate::diagram::architecture_svg(summary).into_bytes())?;
    put("receipts.svg", crate::diagram::receipts_svg(summary).into_bytes())?;
    put("report.md", crate::markdown::render_report_md(summary, &names).into_bytes())?;
    Ok(written)
}

/// The report's SVG plots: each SLO metric's latency CDF with its threshold, and the
/// throughput over time with the fault windows shaded.
fn plots(o: &Outcome, s: &Summary) -> Vec<(String, String)> {
    let run = format!("{}, seed {}", s.scenario_name, s.seed);
    let mut plots = Vec::new();
    for slo in s.slos.iter().filter(|v| v.objective_ms > 0.0) {
        if let Some((_, h)) = o.latencies.named().into_iter().find(|(name, _)| *name == slo.metric) {
            let title = format!("{} latency: {run}", slo.metric);
            plots.push((
                format!("latency_{}.svg", slo.metric),
                crate::plot::latency_cdf_svg(&title, slo.metric, h, slo.objective_ms),
            ));
        }
    }
    let seconds = o.simulated_s() as usize;
    let faults: Vec<(f64, f64)> = o
        .scenario
        .faults
        .iter()
        .map(|f| {
            let (from, until) = f.window_s();
            (from as f64, until as f64)
        })
        .collect();
    for (metric, series) in o.latencies_per_second.named() {
        if series.iter().all(Option::is_none) {
            continue;
        }
        let quantile = |q: f64| -> Vec<f64> {
            (0..seconds)
                .map(|i| {
                    series.get(i).and_then(Option::as_ref).map_or(f64::NAN, |h| h.value_at_quantile(q) as f64 / 1e3)
                })
                .collect()
        };
        let mut lines = vec![("p50".to_string(), quantile(0.5)), ("p99".to_string(), quantile(0.99))];
        let objective = s.slos.iter().find(|v| v.metric == metric).map(|v| v.objective_ms);
        if let Some(ms) = objective {
            lines.push((format!("SLO: p99 < {ms} ms"), vec![ms; seconds]));
        }
        let title = format!("{metric} latency by the second its event began: {run}");
        plots.push((
            format!("latency_over_time_{metric}.svg"),
            crate::plot::over_time_svg(&title, &format!("{metric} latency (ms)"), &lines, &faults),
        ));
    }
    let utilisation: Vec<(String, Vec<f64>)> = o
        .work_per_second
        .iter()
        .map(|t| (t.kind.name().to_string(), t.utilisation().iter().take(seconds).map(|u| u * 100.0).collect()))
        .collect();
    let title = format!("Utilisation per tier (work arrived ÷ capacity): {run}");
    plots
        .push(("utilisation.svg".into(), crate::plot::over_time_svg(&title, "utilisation (%)", &utilisation, &faults)));
    let [messages, groups] = &o.kafka_lag_per_second;
    let mut lag = vec![("messages topic".to_string(), messages.iter().take(seconds).map(|&v| v as f64).collect())];
    if groups.iter().any(|&v| v > 0) {
        lag.push(("group-messages topic".to_string(), groups.iter().take(seconds).map(|&v| v as f64).collect()));
    }
    let title = format!("Kafka consumer lag (appended, not yet committed): {run}");
    plots.push(("kafka_lag.svg".into(), crate::plot::over_time_svg(&title, "records", &lag, &faults)));
    let per_s = |f: fn(&wasim_sim::SecondCounters) -> u64| -> Vec<f64> {
        o.per_second.iter().take(seconds).map(|c| f(c) as f64).collect()
    };
    let series = [
        ("sends".to_string(), per_s(|c| c.sends)),
        ("✓ (stored)".to_string(), per_s(|c| c.sent_acks)),
        ("delivered".to_string(), per_s(|c| c.deliveries)),
        ("receipts".to_string(), per_s(|c| c.receipts)),
    ];
    let title = format!("Throughput: {run}");
    plots.push(("throughput.svg".into(), crate::plot::over_time_svg(&title, "per simulated second", &series, &faults)));
    if o.scenario.media.on() {
        let gbps = |f: fn(&wasim_sim::SecondCounters) -> u64| -> Vec<f64> {
            o.per_second.iter().take(seconds).map(|c| f(c) as f64 * 8.0 / 1e9).collect()
        };
        let capacity = vec![o.scenario.media.ingest_gbps; seconds.min(o.per_second.len())];
        let series = [
            ("object-store ingest".to_string(), gbps(|c| c.media_ingest_bytes)),
            ("its bandwidth".to_string(), capacity),
            ("CDN egress".to_string(), gbps(|c| c.cdn_egress_bytes)),
        ];
        let title = format!("Media bandwidth: {run}");
        plots.push(("media.svg".into(), crate::plot::over_time_svg(&title, "Gbit/s", &series, &faults)));
    }
    if !o.latencies.presence_detection.is_empty() {
        let title = format!("Presence detection (a silent device to shown offline): {run}");
        let svg = crate::plot::histogram_svg(&title, "time to detect (s)", &o.latencies.presence_detection, 40);
        plots.push(("presence_detection.svg".into(), svg));
    }
    let title = format!("Connections per chat server: {run}");
    plots.push(("connections.svg".into(), crate::plot::over_time_svg(&title, "connections", &connections(o), &faults)));
    plots
}

/// The connections plot's series: each chat server's when there are few; else the fewest,
/// the mean and the most over the servers, and each server a fault crashes.
fn connections(o: &Outcome) -> Vec<(String, Vec<f64>)> {
    const EACH_MAX: usize = 8;
    let servers = &o.chat_connections_per_second;
    let as_f64 = |s: &Vec<u32>| s.iter().map(|&c| f64::from(c)).collect::<Vec<f64>>();
    if servers.len() <= EACH_MAX {
        return servers.iter().enumerate().map(|(i, s)| (format!("chat_server-{i}"), as_f64(s))).collect();
    }
    let seconds = servers.iter().map(Vec::len).max().unwrap_or(0);
    let across = |f: &dyn Fn(&mut dyn Iterator<Item = f64>) -> f64| -> Vec<f64> {
        (0..seconds).map(|t| f(&mut servers.iter().map(|s| f64::from(s[t])))).collect()
    };
    let mut series = vec![
        ("fewest".to_string(), across(&|it| it.fold(f64::INFINITY, f64::min))),
        (
            "mean".to_string(),
            across(&|it| {
                let (sum, n) = it.fold((0.0, 0.0), |(s, n), v| (s + v, n + 1.0));
                sum / n
            }),
        ),
        ("most".to_string(), across(&|it| it.fold(0.0, f64::max))),
    ];
    for f in &o.scenario.faults {
        if let wasim_sim::Fault::Crash { ref target, .. } = *f {
            if let Ok((wasim_sim::NodeKind::ChatServer, i)) = wasim_sim::crash_target(&o.scenario, target) {
                series.push((target.clone(), as_f64(&servers[i as usize])));
            }
        }
    }
    series
}

fn json<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(v).map_err(io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn timeseries(o: &Outcome) -> io::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> =
        ["second", "sends", "sent_acks", "deliveries", "receipts"].iter().map(|h| h.to_string()).collect();
    let latency = o.latencies_per_second.named();
    for (metric, _) in latency {
        header.push(format!("{metric}_p50_ms"));
        header.push(format!("{metric}_p99_ms"));
    }
    header.extend(o.work_per_second.iter().map(|t| format!("utilisation_{}", t.kind.name())));
    header.extend(["kafka_lag_messages".to_string(), "kafka_lag_group_messages".to_string()]);
    let media = o.scenario.media.on();
    if media {
        header.extend(["media_ingest_bytes".to_string(), "cdn_egress_bytes".to_string()]);
    }
    header.push("faults_active".into());
    w.write_record(&header)?;
    let utilisation: Vec<Vec<f64>> = o.work_per_second.iter().map(|t| t.utilisation()).collect();
    for (i, s) in o.per_second.iter().enumerate().take(o.simulated_s() as usize) {
        // The faults active in this second, as `index:kind` joined by `;` (empty if none).
        let faults: Vec<String> = o
            .scenario
            .faults
            .iter()
            .enumerate()
            .filter(|(_, f)| f.active_at(i as f64))
            .map(|(k, f)| format!("{k}:{}", f.kind()))
            .collect();
        let mut row = vec![
            i.to_string(),
            s.sends.to_string(),
            s.sent_acks.to_string(),
            s.deliveries.to_string(),
            s.receipts.to_string(),
        ];
        // Percentiles of the events that began in this second (empty: none did).
        for (_, series) in latency {
            let h = series.get(i).and_then(Option::as_ref);
            for q in [0.5, 0.99] {
                row.push(h.map_or(String::new(), |h| format!("{:.3}", h.value_at_quantile(q) as f64 / 1e3)));
            }
        }
        row.extend(utilisation.iter().map(|u| u.get(i).map_or(String::new(), |u| format!("{u:.4}"))));
        for lag in &o.kafka_lag_per_second {
            row.push(lag.get(i).map_or(String::new(), u64::to_string));
        }
        if media {
            row.extend([s.media_ingest_bytes.to_string(), s.cdn_egress_bytes.to_string()]);
        }
        row.push(faults.join(";"));
        w.write_record(&row)?;
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
    fn only_a_folder_of_report_files_may_be_replaced() {
        let root = std::env::temp_dir().join(format!("wasim-report-dir-{}", std::process::id()));
        let dir = root.join("report");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(ReportDir::prepare(&dir).is_ok(), "an empty folder");
        for name in ["summary.json", "delivery.hgrm", "trace.csv"] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        assert!(ReportDir::prepare(&dir).is_ok(), "a folder of report files");
        std::fs::create_dir(dir.join("plots-by-hand")).unwrap();
        let refused = ReportDir::prepare(&dir).unwrap_err().to_string();
        std::fs::remove_dir_all(&root).unwrap();
        assert!(refused.contains("plots-by-hand") && refused.contains("refusing"), "{refused}");
    }

    #[test]
    fn empty_histogram_gives_only_the_header() {
        let h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        assert_eq!(hgrm(&h).lines().count(), 2);
    }
}
