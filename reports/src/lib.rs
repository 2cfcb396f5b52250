//! wasim-reports: pure rendering of a simulation's outcome: the summary (table and JSON),
//! the per-second time series (CSV) and HdrHistogram percentile files (.hgrm).

mod calibration;
mod diagram;
mod estimate;
mod files;
mod markdown;
pub mod multi;
mod plot;
mod summary;
mod table;

pub use calibration::{calibration_passes, render_calibration};
pub use estimate::{render_estimate, EstimateFormat, EstimateReport, TierAnalytic};
pub use files::{write_report, ReportDir, ReportFiles};
pub use summary::{LatencySummary, OpLoad, PlacementRow, SloVerdict, Sometimes, Summary, Verdict};
pub use table::{render_settings, render_summary, render_timing, Timing};
