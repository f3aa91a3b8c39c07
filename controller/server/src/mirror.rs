//! Mirrors the results folder to an S3-compatible object store (`--results-s3
//! s3://bucket/prefix`), through the `object_store` crate.
//!
//! The local results folder stays the source of truth: agents are acknowledged once a
//! partition is on local disk, never waiting for the bucket. After each partition write the
//! writer queues its files ([`Mirror::queue`], a bounded channel, never blocking); the
//! [`Uploader`] task PUTs each whole file (an S3 PUT is atomic) under
//! `<prefix>/<path relative to the results folder>`, so the bucket has the same Hive layout
//! (`<prefix>/model=<slug>/gpus=<n>/<sweep-id>.points.parquet`, ...). Queued uploads are
//! coalesced by path: a file is read when it is uploaded, so its newest version goes and
//! older queued versions are superseded. A failed upload is logged and retried with
//! backoff (1 s doubling up to 60 s); nothing is lost meanwhile, the local file is there.
//!
//! Endpoint, region and credentials come from the usual AWS environment variables
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_ALLOW_HTTP=true` for an `http://` endpoint), read by
//! `AmazonS3Builder::from_env`; [`MirrorConfig::options`] can set them too.
//!
//! Not done: files written while no mirror was configured (or before a restart, still
//! queued) are not uploaded until their partition is written again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::ControllerError;

/// Uploads queued between the writer and the uploader (each is a few path bytes: the
/// uploader drains them into its coalescing map even while an upload runs).
const QUEUE: usize = 1024;
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How long the uploader keeps trying what is still queued once the controller stops.
const FINAL_TRY: Duration = Duration::from_secs(10);

/// Where the results are mirrored: `s3://<bucket>/<prefix>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (may be empty: the bucket's root).
    pub prefix: String,
    /// `object_store` S3 settings (`aws_endpoint`, `aws_allow_http`, ...) applied over
    /// those read from the environment. The controller binary sets none.
    pub options: Vec<(String, String)>,
}

impl MirrorConfig {
    /// `s3://bucket/prefix` (the prefix may be empty or have several segments).
    pub fn parse(url: &str) -> Result<Self, ControllerError> {
        let usage = |why: &str| {
            ControllerError::Usage(format!(
                "--results-s3 {url:?}: {why}; expected s3://bucket/prefix"
            ))
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| usage("not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(usage("no bucket"));
        }
        if !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(usage(
                "a bucket name has lowercase letters, digits, '-' and '.' only",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == "." || s == "..") || prefix.contains("//") {
            return Err(usage("the prefix has an empty, '.' or '..' segment"));
        }
        Ok(MirrorConfig {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            options: Vec::new(),
        })
    }

    /// The object store, configured from the environment and [`MirrorConfig::options`].
    fn store(&self) -> Result<Arc<dyn ObjectStore>, ControllerError> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&self.bucket);
        for (key, value) in &self.options {
            let key = AmazonS3ConfigKey::from_str(key).map_err(|e| {
                ControllerError::Usage(format!("results mirror setting {key:?}: {e}"))
            })?;
            builder = builder.with_config(key, value);
        }
        let store = builder.build().map_err(|e| {
            ControllerError::Usage(format!("--results-s3 s3://{}: {e}", self.bucket))
        })?;
        Ok(Arc::new(store))
    }
}

impl FromStr for MirrorConfig {
    type Err = ControllerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MirrorConfig::parse(s)
    }
}

/// One file to upload, read when it is uploaded.
#[derive(Debug)]
struct Upload {
    path: PathBuf,
    sweep_id: String,
}

/// The writer's end: queues files for upload without waiting.
#[derive(Debug, Clone)]
pub struct Mirror {
    tx: mpsc::Sender<Upload>,
}

impl Mirror {
    /// Queues `files` (written for sweep `sweep_id`) for upload. Never waits: with the
    /// queue full, a task waits for room instead.
    pub fn queue<'a>(&self, sweep_id: &str, files: impl IntoIterator<Item = &'a Path>) {
        for path in files {
            let upload = Upload {
                path: path.to_path_buf(),
                sweep_id: sweep_id.to_string(),
            };
            match self.tx.try_send(upload) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(upload)) => {
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = tx.send(upload).await {
                            warn!(sweep_id = %e.0.sweep_id, path = %e.0.path.display(), "results mirror stopped; file not uploaded");
                        }
                    });
                }
                Err(mpsc::error::TrySendError::Closed(upload)) => {
                    warn!(sweep_id = %upload.sweep_id, path = %upload.path.display(), "results mirror stopped; file not uploaded");
                }
            }
        }
    }
}

/// A file waiting for its upload (the newest queued version of its path).
#[derive(Debug)]
struct Pending {
    sweep_id: String,
    /// Failed tries in a row.
    failures: u32,
    /// Not tried again before this (backoff after a failure).
    not_before: Instant,
}

/// The uploader task's end (see [`Uploader::run`]).
pub struct Uploader {
    store: Arc<dyn ObjectStore>,
    root: PathBuf,
    prefix: String,
    rx: mpsc::Receiver<Upload>,
    pending: BTreeMap<PathBuf, Pending>,
}

/// The mirror of results folder `root` to `config`'s bucket: the writer's handle and the
/// uploader to run. Fails (a usage error) when the object store cannot be configured.
pub fn start(config: &MirrorConfig, root: &Path) -> Result<(Mirror, Uploader), ControllerError> {
    let store = config.store()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    info!(bucket = %config.bucket, prefix = %config.prefix, "results mirrored to S3");
    Ok((
        Mirror { tx },
        Uploader {
            store,
            root: root.to_path_buf(),
            prefix: config.prefix.clone(),
            rx,
            pending: BTreeMap::new(),
        },
    ))
}

impl Uploader {
    /// Uploads queued files until `stop`, then tries what is queued once more (for at
    /// most [`FINAL_TRY`]) and returns.
    /// `uploaded` hears of every upload's outcome (the controller's metrics).
    pub async fn run(mut self, uploaded: impl Fn(bool) + Send + Sync, stop: CancellationToken) {
        loop {
            self.drain();
            let now = Instant::now();
            let ready = self
                .pending
                .iter()
                .find(|(_, p)| p.not_before <= now)
                .map(|(path, _)| path.clone());
            let Some(path) = ready else {
                let wake = self.pending.values().map(|p| p.not_before).min();
                tokio::select! {
                    u = self.rx.recv() => match u {
                        Some(u) => self.add(u),
                        None => break,
                    },
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
                }
                continue;
            };
            // A PUT to an unreachable server can take minutes (object_store retries it
            // too): stopping does not wait for it; the file stays queued for the last round.
            let sweep_id = self.pending.get(&path).map(|p| p.sweep_id.clone());
            let stopped = tokio::select! {
                () = self.upload_one(&uploaded, path.clone()) => false,
                () = stop.cancelled() => true,
            };
            if stopped {
                if let Some(sweep_id) = sweep_id {
                    self.pending.entry(path).or_insert_with(|| Pending {
                        sweep_id,
                        failures: 0,
                        not_before: Instant::now(),
                    });
                }
                break;
            }
        }
        // Last round: every file still queued, once, without backoff.
        self.drain();
        let deadline = Instant::now() + FINAL_TRY;
        let paths: Vec<PathBuf> = self.pending.keys().cloned().collect();
        // The upload cut short by the deadline has left the map.
        let mut cut_short = 0;
        for path in paths {
            if tokio::time::timeout_at(deadline, self.upload_one(&uploaded, path))
                .await
                .is_err()
            {
                cut_short = 1;
                break;
            }
        }
        let left = self.pending.len() + cut_short;
        if left > 0 {
            warn!(
                files = left,
                "results mirror stopped with files not uploaded; they are in the results folder"
            );
        }
    }

    /// Moves everything queued into the coalescing map.
    fn drain(&mut self) {
        while let Ok(u) = self.rx.try_recv() {
            self.add(u);
        }
    }

    /// A newer version of a queued file supersedes it (keeping its backoff).
    fn add(&mut self, u: Upload) {
        self.pending
            .entry(u.path)
            .and_modify(|p| p.sweep_id.clone_from(&u.sweep_id))
            .or_insert_with(|| Pending {
                sweep_id: u.sweep_id,
                failures: 0,
                not_before: Instant::now(),
            });
    }

    /// Uploads `path`'s current content, taking queued files in meanwhile. On success the
    /// file leaves the map unless a newer version was queued during the upload; on
    /// failure it is retried after a backoff.
    async fn upload_one(&mut self, uploaded: &(impl Fn(bool) + Sync), path: PathBuf) {
        // Versions queued from now on were written after this read: they must go too.
        let Some(Pending {
            sweep_id,
            failures: failed_before,
            ..
        }) = self.pending.remove(&path)
        else {
            return;
        };
        let (store, key) = (Arc::clone(&self.store), self.key(&path));
        let upload = put(store, path.clone(), key.clone());
        tokio::pin!(upload);
        let result = loop {
            tokio::select! {
                r = &mut upload => break r,
                Some(u) = self.rx.recv() => self.add(u),
            }
        };
        uploaded(result.is_ok());
        match result {
            Ok(bytes) => {
                debug!(sweep_id = %sweep_id, key = %key, bytes, "results file uploaded");
            }
            // Gone locally: a newer write replaced it or the sweep's files were removed;
            // nothing to upload (a newer version is queued by its write).
            Err(ControllerError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                warn!(sweep_id = %sweep_id, path = %path.display(), "results file gone before its upload");
            }
            Err(e) => {
                let failures = failed_before + 1;
                let wait = RETRY_FIRST
                    .saturating_mul(1 << failures.saturating_sub(1).min(6))
                    .min(RETRY_MAX);
                warn!(sweep_id = %sweep_id, key = %key, error = %e, failures, retry_in_s = wait.as_secs_f64(), "results upload failed; retrying");
                self.pending.insert(
                    path,
                    Pending {
                        sweep_id,
                        failures,
                        not_before: Instant::now() + wait,
                    },
                );
            }
        }
    }

    /// `<prefix>/<path relative to the results folder>`.
    fn key(&self, path: &Path) -> ObjectPath {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        let parts = rel.components().filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        });
        let prefix = self.prefix.split('/').filter(|s| !s.is_empty());
        ObjectPath::from_iter(prefix.map(str::to_string).chain(parts))
    }
}

/// Reads `path` and PUTs it whole at `key`; the bytes uploaded.
async fn put(
    store: Arc<dyn ObjectStore>,
    path: PathBuf,
    key: ObjectPath,
) -> Result<usize, ControllerError> {
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ControllerError::io(path, e))?;
    let n = bytes.len();
    store
        .put(&key, PutPayload::from(bytes))
        .await
        .map_err(|e| ControllerError::Mirror(format!("PUT {key}: {e}")))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix() {
        let c = MirrorConfig::parse("s3://bench-results/fleet/a/").unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("bench-results", "fleet/a")
        );
        let c = MirrorConfig::parse("s3://b").unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("b", ""));
        for bad in [
            "b/p",
            "s3:///p",
            "s3://B/p",
            "s3://b/a/../p",
            "s3://b/a//p",
            "gs://b",
        ] {
            let e = MirrorConfig::parse(bad).unwrap_err();
            assert!(matches!(e, ControllerError::Usage(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn keys_keep_the_hive_layout_under_the_prefix() {
        let config = MirrorConfig {
            options: vec![
                ("aws_endpoint".into(), "http://127.0.0.1:1".into()),
                ("aws_allow_http".into(), "true".into()),
                ("aws_region".into(), "us-east-1".into()),
            ],
            ..MirrorConfig::parse("s3://b/runs/x").unwrap()
        };
        let (_, up) = start(&config, Path::new("/r")).unwrap();
        assert_eq!(
            up.key(Path::new("/r/model=org--m/gpus=2/s-1.points.parquet"))
                .as_ref(),
            "runs/x/model=org--m/gpus=2/s-1.points.parquet"
        );
    }
}
