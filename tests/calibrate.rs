//! `wasim calibrate --quick`, the CI version of the calibration: every tier's queue, with 1
//! and 4 workers at ρ = 0.5 and 0.8, within 10% of the M/M/c closed form on mean, p50 and
//! p99 sojourn. A tolerance no queue can meet makes it fail, so the check can fail.

mod common;
use common::wasim;

#[test]
fn every_tier_queues_as_the_closed_form_says() {
    let out = wasim(&["calibrate", "--quick", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON rows");
    let rows = rows.as_array().expect("an array of rows");
    assert_eq!(rows.len(), 5 * 2 * 2, "five tiers, two worker counts, two loads");
    for r in rows {
        assert!(r["measured"].as_u64().unwrap() >= 200_000, "{r}");
        for q in ["mean_us", "p50_us", "p99_us"] {
            let e = r["error"][q].as_f64().unwrap();
            assert!(e.abs() <= 0.10, "{q} off by {:.1}%: {r}", e * 100.0);
        }
        let util = r["utilisation"].as_f64().unwrap();
        let rho = r["row"]["rho"].as_f64().unwrap();
        assert!((util - rho).abs() < 0.03, "the probe loads the tier as planned: {util} for ρ {rho}");
    }
}

#[test]
fn a_tolerance_no_queue_meets_fails_with_exit_1() {
    let out = wasim(&["calibrate", "--quick", "--customers", "2000", "--tolerance", "0.001"]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("OUT OF TOLERANCE") && table.contains("FAIL: 20 rows"), "{table}");
}

#[test]
fn bad_options_are_refused_with_exit_2() {
    for args in
        [&["calibrate", "--tolerance", "0"][..], &["calibrate", "--link-ms", "-1"], &["calibrate", "--customers", "5"]]
    {
        assert_eq!(wasim(args).status.code(), Some(2), "{args:?}");
    }
}
