//! The media pipeline: pre-signed upload to the object store, the reference through the
//! chat servers, the CDN download. The shipped scenario holds its invariants over 20 seeds
//! of its own; the visit table predicts the media tiers; a lone upload takes its closed
//! form; an overloaded store ingests at its bandwidth; an outage is retried; bad media
//! input is refused with its line.

mod common;
use common::{run_bad, stderr, wasim};
use wasim_reports::Summary;
use wasim_sim::{Fault, Scenario};

fn media_heavy() -> Scenario {
    Scenario::load(&common::repo_root().join("scenarios/media-heavy.toml")).expect("media-heavy ships")
}

#[test]
fn media_heavy_holds_its_invariants_on_twenty_seeds() {
    let s = media_heavy();
    let (mut refused, mut hits, mut fetched) = (0, 0, 0);
    for (seed, o) in common::sweep(&s, 21..41) {
        assert!(o.checks.ok(), "seed {seed}: {:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
        let c = &o.counters;
        assert!(c.media_sends > 0 && c.media_downloads > 0, "seed {seed}: {c:?}");
        // Only the reference went through the chat servers, and every message went after
        // its upload (the checker judges each one; these are the totals).
        assert_eq!(c.chat_frames_with_media_bytes, 0, "seed {seed}");
        assert!(c.media_sends <= c.media_uploads_stored, "seed {seed}: {c:?}");
        assert!(c.media_sends + c.media_sends_failed + c.media_uploads_pending_end <= c.media_taps, "seed {seed}");
        refused += c.media_uploads_refused;
        hits += c.cdn_hits;
        fetched += c.cdn_origin_fetches;
    }
    assert!(refused > 0, "the store's outage refused uploads, which were tried again");
    assert!(hits > 0 && fetched > 0, "the edges hit and missed");
}

#[test]
fn without_faults_the_visit_table_predicts_the_media_tiers() {
    let mut s = media_heavy();
    s.faults.clear();
    for (seed, o) in common::sweep(&s, 11..13) {
        assert!(o.checks.ok(), "seed {seed}");
        let summary = Summary::new(&o, "media-heavy");
        for tier in ["media_api", "object_store", "cdn", "chat_server", "cassandra"] {
            let t = summary.tiers.iter().find(|t| t.tier == tier).expect("the tier ran");
            assert!(t.prediction_error.abs() <= 0.05, "seed {seed}: {tier} {:+.1}%", t.prediction_error * 100.0);
        }
        let m = summary.media.expect("media figures");
        assert_eq!((m.failed_visibly, m.puts_refused), (0, 0), "seed {seed}: a healthy store refuses nothing");
        assert!(m.chat_frame_bytes_mean < f64::from(wasim_sim::FRAME_BYTES_MAX), "seed {seed}");
        // Ingest over the window is the uploads' bytes: about 40% of ~1,050 msg/s at the
        // kinds' mean size (the scenario's log-normals: 655 kB), some 2.2 Gbit/s.
        let expected = s.media.share * 1_050.0 * s.media.mean_bytes();
        let off = m.ingest_bytes_per_s_mean / expected - 1.0;
        assert!(off.abs() < 0.15, "seed {seed}: ingest {} against {expected}", m.ingest_bytes_per_s_mean);
    }
}

/// A small cell of constant times: every upload takes the same closed form.
fn constant_cell(ingest_gbps: f64, share: f64) -> String {
    format!(
        r#"duration_s = 10
warmup_s = 3
drain_s = 20
[users]
concurrent = 400
connect_ramp_s = 1
devices_per_user = {{ phone = 1.0, web = 0.0 }}
[workload]
messages_per_s = 20
app_closes_per_hour = 0
[network]
client_server_ms = {{ dist = "constant", value = 20 }}
in_datacenter_ms = {{ dist = "constant", value = 0.5 }}
[media]
share = {share}
kinds = {{ image = 1.0, video = 0.0, audio = 0.0, document = 0.0 }}
image_kb = {{ dist = "constant", value = 1000 }}
uplink_mbps = {{ dist = "constant", value = 8 }}
downlink_mbps = {{ dist = "constant", value = 80 }}
encrypt_mb_per_s = 200
presign_us = {{ dist = "constant", value = 500 }}
object_store_us = {{ dist = "constant", value = 20000 }}
object_store_nodes = 1
ingest_gbps = {ingest_gbps}
"#
    )
}

#[test]
fn a_lone_upload_takes_its_closed_form() {
    // Encrypt 1 MB at 200 MB/s (5 ms), presign (20 ms there, 0.5 ms served, 20 ms back),
    // PUT at 1 MB/s (1 s for the last byte to leave, 20 ms for it to arrive; the store's
    // 20 ms to first byte and its 8 ms of ingest overlap it), and the 200 back (20 ms):
    // 1,085.5 ms, every time, on an idle store.
    let o = common::simulate(&constant_cell(1.0, 1.0));
    assert!(o.checks.ok(), "{:?}", o.checks.violations);
    let h = &o.latencies.media_upload;
    assert!(h.len() > 100, "{} uploads", h.len());
    let (lo, hi) = (h.min() as f64 / 1e3, h.max() as f64 / 1e3);
    assert!((lo - 1_085.5).abs() <= 2.0 && (hi - 1_085.5).abs() <= 2.0, "upload {lo}..{hi} ms");
    // Viewable no sooner than the upload, the message and the download (1 MB at 10 MB/s).
    let v = &o.latencies.media_send_to_viewable;
    assert!(v.len() > 100 && v.min() as f64 / 1e3 >= 1_085.5 + 40.0 + 100.0, "viewable from {} ms", v.min());
}

#[test]
fn an_overloaded_store_ingests_at_its_bandwidth() {
    // 20 uploads of 1 MB a second into 0.08 Gbit/s (10 MB/s): the store is busy every
    // second of the window, storing exactly its bandwidth, and the uploads queue.
    let o = common::simulate(&constant_cell(0.08, 1.0));
    assert!(o.checks.ok(), "{:?}", o.checks.violations);
    let summary = Summary::new(&o, "overloaded");
    let m = summary.media.expect("media figures");
    assert!((m.ingest_bytes_per_s_mean / 10e6 - 1.0).abs() < 0.01, "ingest {} B/s", m.ingest_bytes_per_s_mean);
    assert!(o.latencies.media_upload.value_at_quantile(0.99) > 5_000_000, "the uploads queued");
}

#[test]
fn an_outage_is_retried_and_its_messages_wait() {
    let mut s = common::parse(&constant_cell(1.0, 1.0));
    s.faults.push(Fault::ObjectStoreDown { at_s: 5, for_s: 3 });
    let o = wasim_sim::run(&s, &wasim_sim::RunOptions::default());
    assert!(o.checks.ok(), "{:?}", o.checks.violations);
    let c = &o.counters;
    assert!(c.media_uploads_refused > 0, "{c:?}");
    // No message went without its object; the uploads refused waited out the outage.
    assert!(o.latencies.media_upload.max() > 3_000_000, "max upload {} µs", o.latencies.media_upload.max());
    assert_eq!(c.media_sends + c.media_sends_failed + c.media_uploads_pending_end, c.media_taps);
}

#[test]
fn media_runs_are_byte_identical_on_one_thread_and_two() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::repo_root().join("scenarios/media-heavy.toml");
    let mut outs = Vec::new();
    for threads in ["1", "2"] {
        let out = dir.path().join(threads);
        let o = wasim(&["scenario", file.to_str().unwrap(), "--threads", threads, "--out", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        outs.push(out);
    }
    for f in ["summary.json", "timeseries.csv", "media_send_to_viewable.hgrm", "report.md", "media.svg"] {
        let a = std::fs::read(outs[0].join(f)).unwrap();
        let b = std::fs::read(outs[1].join(f)).unwrap();
        assert!(a == b, "{f} differs between one thread and two");
    }
}

#[test]
fn bad_media_input_names_its_line_and_field() {
    let (code, err, path) = run_bad("[media]\nshare = 1.5\n");
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("{path}:2: field `media.share`")), "{err}");
    let (code, err, path) = run_bad("[media]\nshare = 0.2\nimage_kb = { dist = \"constant\", value = 3000000 }\n");
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("{path}:3: field `media.image_kb`")) && err.contains("kB"), "{err}");
    // A media fault in a scenario without media, and an edge that does not exist.
    let (code, err, _) = run_bad("[[faults]]\nkind = \"object_store_down\"\nat_s = 3\nfor_s = 2\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("faults[0]") && err.contains("media.share"), "{err}");
    let (code, err, _) = run_bad(
        "[media]\nshare = 0.2\n[[faults]]\nkind = \"cdn_edge_loss\"\nat_s = 3\nfor_s = 2\ntarget = \"cdn-99\"\n",
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("faults[0].target") && err.contains("cdn-7"), "{err}");
    let (code, err, _) =
        run_bad("[media]\nshare = 0.2\n[[faults]]\nkind = \"object_store_slow\"\nat_s = 3\nfor_s = 2\nfactor = 0.5\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("faults[0].factor"), "{err}");
}

/// The planted relay (the device puts the media bytes on its WebSocket, skipping the object
/// store) is named both ways: each frame of bytes a chat server carried, and each message
/// whose reference has no completed upload.
#[cfg(feature = "planted-bugs")]
#[test]
fn a_relay_through_the_chat_servers_is_named_frame_by_frame() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::repo_root().join("scenarios/media-heavy.toml");
    let out = dir.path().join("out");
    let args =
        ["scenario", file.to_str().unwrap(), "--plant", "chat-server-relays-media", "--out", out.to_str().unwrap()];
    let o = wasim(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).expect("summary.json");
    let c = &summary["counters"];
    let (frames, sends) = (c["chat_frames_with_media_bytes"].as_u64().unwrap(), c["media_sends"].as_u64().unwrap());
    assert!(sends > 0 && frames > 0, "{c}");
    let counts = summary["invariants"]["counts"].as_array().unwrap();
    let ninth = counts.iter().find(|n| n[0] == 9).expect("invariant 9 named")[1].as_u64().unwrap();
    // Every relayed frame, and every message that referenced no upload.
    assert!(ninth >= frames + sends - 10, "{ninth} violations for {frames} frames and {sends} sends");
}
