//! The results mirror (`--results-s3`) against a real S3 server: `moto` (pure Python, from
//! PyPI), started on a free port. After a sweep the bucket holds the same Hive-layout files
//! as the local results folder, byte for byte, and a downloaded points file reads back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fleetbench_controller::mirror::MirrorConfig;
use fleetbench_tests::{AgentSpec, Cluster, free_local_addr, submit, tiny_sweep, watch_to_end};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

const BUCKET: &str = "fleet-results";
const PREFIX: &str = "runs/ci";
const PIP: &str = "python3 -m pip install --quiet 'moto[server]==5.2.6'";

/// The moto server; killed (and reaped) when dropped.
struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts moto on a free port and waits until it answers; its endpoint URL.
async fn start_moto() -> (Moto, String) {
    let have = Command::new("python3")
        .args(["-c", "import moto"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(have, "this test needs the moto S3 server: {PIP}");
    let addr = free_local_addr();
    let child = Command::new("python3")
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
        .arg(addr.port().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start python3 -m moto.server: {e} ({PIP})"));
    let moto = Moto(child);
    let endpoint = format!("http://{addr}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if reqwest::get(&endpoint).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "moto did not answer on {endpoint} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (moto, endpoint)
}

fn options(endpoint: &str) -> Vec<(String, String)> {
    [
        ("aws_endpoint", endpoint),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Every results file (`*.parquet`; not the writer's temporary files) under `root`, by path
/// relative to it (`/`-separated), with its bytes.
fn local_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let rel = path.strip_prefix(root).unwrap();
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.insert(rel.join("/"), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Every object under `PREFIX`, by key relative to it, with its bytes.
async fn bucket_files(store: &Arc<dyn ObjectStore>) -> BTreeMap<String, Vec<u8>> {
    let prefix = ObjectPath::from(PREFIX);
    let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
    let mut out = BTreeMap::new();
    for meta in metas {
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let key = meta.location.as_ref();
        let rel = key.strip_prefix(&format!("{PREFIX}/")).unwrap_or(key);
        out.insert(rel.to_string(), bytes.to_vec());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_mirrored_to_s3_in_the_same_hive_layout() {
    let (_moto, endpoint) = start_moto().await;
    // moto accepts unsigned requests: a plain PUT creates the bucket.
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{BUCKET}"))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "create bucket: {created:?}");
    let mut builder = AmazonS3Builder::new().with_bucket_name(BUCKET);
    for (k, v) in options(&endpoint) {
        builder = builder.with_config(k.parse().unwrap(), v);
    }
    let store: Arc<dyn ObjectStore> = Arc::new(builder.build().unwrap());

    let mirror = MirrorConfig {
        options: options(&endpoint),
        ..MirrorConfig::parse(&format!("s3://{BUCKET}/{PREFIX}/")).unwrap()
    };
    let agent = AgentSpec::sim(
        "a1",
        2,
        &["--sim-step-ms", "2", "--sim-step-ms-per-seq", "0"],
    );
    let cluster = Cluster::start_mirrored(vec![agent], mirror).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let id = submit(&mut client, &tiny_sweep("mirrored", "[1, 2]", 7)).await;
    let finished = watch_to_end(&mut client, &id).await;
    assert_eq!(finished.state, "done", "{finished:?}");

    // Uploads trail the local writes: poll until the bucket matches, with a deadline.
    let local = local_files(&cluster.results);
    assert_eq!(
        local.len(),
        6,
        "two partitions (gpus=1, gpus=2), three files each: {:?}",
        local.keys()
    );
    assert!(
        local
            .keys()
            .all(|k| k.starts_with("model=test-org--tiny-model/gpus=")),
        "{:?}",
        local.keys()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let remote = loop {
        let remote = bucket_files(&store).await;
        if remote == local {
            break remote;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bucket does not match the results folder after 60 s: local {:?}, bucket {:?}",
            local.keys().collect::<Vec<_>>(),
            remote
                .iter()
                .map(|(k, v)| (k, v.len(), local.get(k).map(|l| l == v)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // A downloaded points file is a results file like any other.
    let (key, bytes) = remote
        .iter()
        .find(|(k, _)| k.ends_with(".points.parquet"))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let downloaded = tmp.path().join("downloaded.points.parquet");
    std::fs::write(&downloaded, bytes).unwrap();
    let points = fleetbench_results::read::read_point_summaries(&downloaded).unwrap();
    assert!(!points.is_empty(), "{key}");
    assert!(points.iter().all(|p| p.meta.sweep_id == id), "{key}");

    cluster.stop().await;
}

/// A bucket that cannot be reached holds nothing up: the sweep ends `done` (its points are
/// acknowledged on the local write alone) and the controller still stops promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bucket_does_not_hold_the_sweep_up() {
    // A port nobody listens on.
    let endpoint = format!("http://{}", free_local_addr());
    let mirror = MirrorConfig {
        options: options(&endpoint),
        ..MirrorConfig::parse(&format!("s3://{BUCKET}/{PREFIX}")).unwrap()
    };
    let agent = AgentSpec::sim(
        "a1",
        2,
        &["--sim-step-ms", "2", "--sim-step-ms-per-seq", "0"],
    );
    let cluster = Cluster::start_mirrored(vec![agent], mirror).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let id = submit(&mut client, &tiny_sweep("unmirrored", "[1, 2]", 7)).await;
    let finished = tokio::time::timeout(Duration::from_secs(60), watch_to_end(&mut client, &id))
        .await
        .expect("sweep did not end within 60 s");
    assert_eq!(finished.state, "done", "{finished:?}");
    assert_eq!(local_files(&cluster.results).len(), 6);
    // The uploader gives up its last round after 10 s.
    let stopping = tokio::time::Instant::now();
    cluster.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "stopping took {:?}",
        stopping.elapsed()
    );
}
