//! `controllerctl report` on a real sweep: a controller and an agent running vllm-sim, two
//! workloads at two GPU counts; the report's files exist, the HTML is well-formed XML and
//! names every point, each dual plot's SVG has exactly one line per workload in each panel,
//! the CSV has a row per point, and the controller serves the same page over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use fleetbench_results::layout::find_result_files;
use fleetbench_results::read::read_point_summaries;
use fleetbench_tests::{
    AgentSpec, Cluster, TINY_SIM_ARGS, submit, tiny_sweep, watch_to_end, workspace_bin,
};
use quick_xml::events::Event;

const MODEL_SLUG: &str = "test-org--tiny-model";

fn sweep() -> String {
    tiny_sweep("report", "[1, 2, 4]", 3)
}

/// Parses `text` as XML; panics on any syntax error, a mismatched or unclosed element.
/// Returns the `polyline` elements with `class="series"`, as (data-panel, data-series).
fn well_formed(text: &str, what: &str) -> Vec<(String, String)> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut series = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => stack.push(e.name().as_ref().to_vec()),
            Ok(Event::End(e)) => {
                let open = stack
                    .pop()
                    .unwrap_or_else(|| panic!("{what}: stray end tag"));
                assert_eq!(open, e.name().as_ref(), "{what}: mismatched end tag");
            }
            Ok(Event::Empty(e)) if e.name().as_ref() == b"polyline" => {
                let attr = |name: &str| {
                    e.try_get_attribute(name)
                        .unwrap()
                        .map(|a| String::from_utf8(a.value.to_vec()).unwrap())
                };
                if attr("class").as_deref() == Some("series") {
                    series.push((attr("data-panel").unwrap(), attr("data-series").unwrap()));
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!(
                "{what} is not well-formed at byte {}: {e}",
                reader.buffer_position()
            ),
        }
    }
    assert!(stack.is_empty(), "{what}: unclosed elements {stack:?}");
    series
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_of_a_sim_sweep_has_every_point_a_line_per_workload_and_is_served() {
    let cluster = Cluster::start_with_http(vec![AgentSpec::sim("alpha", 2, TINY_SIM_ARGS)]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let id = submit(&mut client, &sweep()).await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");

    let mut point_ids = BTreeSet::new();
    for f in find_result_files(&cluster.results, Some(&id)).unwrap() {
        for p in read_point_summaries(&f).unwrap() {
            point_ids.insert(p.meta.point_id);
        }
    }
    assert_eq!(point_ids.len(), 12);

    // The real binary, as a user runs it.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    let run = Command::new(workspace_bin("controllerctl"))
        .env_remove("FLEETBENCH_RESULTS")
        .args(["report", &id, "--dir"])
        .arg(&cluster.results)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    let mut expected = vec!["index.html".to_owned(), "points.csv".to_owned()];
    for gpus in [1, 2] {
        let stem = format!("{MODEL_SLUG}_gpus{gpus}");
        expected.push(format!("{stem}.csv"));
        for chart in ["throughput", "latency"] {
            expected.push(format!("{stem}_{chart}.svg"));
            expected.push(format!("{stem}_{chart}.png"));
        }
    }
    for chart in ["scaling", "tradeoff"] {
        expected.push(format!("{MODEL_SLUG}_{chart}.svg"));
        expected.push(format!("{MODEL_SLUG}_{chart}.png"));
    }
    for name in &expected {
        let path = out.join(name);
        let len = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .len();
        assert!(len > 0, "{name} is empty");
        if name.ends_with(".png") {
            assert!(
                std::fs::read(&path)
                    .unwrap()
                    .starts_with(b"\x89PNG\r\n\x1a\n")
            );
        }
    }

    // The HTML: well-formed, every point named, every plot inline.
    let html = read(&out.join("index.html"));
    let inline = well_formed(&html, "index.html");
    for p in &point_ids {
        assert!(
            html.contains(p.as_str()),
            "index.html does not name point {p}"
        );
    }
    assert!(html.contains("<svg"), "plots are inline");
    assert!(html.contains(&id), "sweep metadata names the sweep");
    assert!(html.contains("12 of 12 points valid"), "verdicts");
    // 2 GPU counts × (2 dual-plot panels + 2 latency panels) × 2 workloads, + the scaling
    // view (3 panels) and the trade-off (1) with one line per GPU count and workload.
    assert_eq!(inline.len(), 2 * 4 * 2 + 4 * 4, "{inline:?}");

    // Each dual plot: exactly one series per workload in each of its two panels.
    let workloads = BTreeSet::from(["64/16 tok".to_owned(), "32/8 tok".to_owned()]);
    for gpus in [1, 2] {
        let name = format!("{MODEL_SLUG}_gpus{gpus}_throughput.svg");
        let series = well_formed(&read(&out.join(&name)), &name);
        let mut panels: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (panel, label) in series {
            panels.entry(panel).or_default().push(label);
        }
        assert_eq!(panels.len(), 2, "{name}: {panels:?}");
        for (panel, labels) in panels {
            assert_eq!(
                labels.len(),
                workloads.len(),
                "{name} panel {panel}: {labels:?}"
            );
            let set: BTreeSet<String> = labels.into_iter().collect();
            assert_eq!(set, workloads, "{name} panel {panel}");
        }
    }

    // CSV: a header and one row per point.
    let csv = read(&out.join("points.csv"));
    assert_eq!(csv.lines().count(), 1 + point_ids.len(), "{csv}");
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .starts_with("sweep_id,point_id,")
    );
    for gpus in [1, 2] {
        let csv = read(&out.join(format!("{MODEL_SLUG}_gpus{gpus}.csv")));
        assert_eq!(csv.lines().count(), 1 + 6);
    }

    // The controller's page of the sweep, and its list of sweeps.
    let base = cluster.http.clone().unwrap();
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{base}/sweeps/{id}/report"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = resp.text().await.unwrap();
    well_formed(&page, "served report");
    for p in &point_ids {
        assert!(page.contains(p.as_str()), "served page does not name {p}");
    }
    // It reloads itself (a running sweep's page follows its points); the file does not.
    assert!(page.contains(r#"<meta http-equiv="refresh" content="30"/>"#));
    assert!(!html.contains("http-equiv"));
    let index = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(
        index
            .text()
            .await
            .unwrap()
            .contains(&format!("/sweeps/{id}/report"))
    );
    let missing = http
        .get(format!("{base}/sweeps/no-such-sweep/report"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    cluster.stop().await;
}
