//! The controller's durable state: an embedded ACID store (redb) holding sweeps, their
//! points' states and summaries, and the agents seen, so a restarted controller resumes
//! every unfinished sweep where it stopped.
//!
//! Rows are protobuf messages (prost), embedding the wire types they keep (`Inventory`,
//! `PointFinished`, `EngineEvent`); a point's summary is TOML text (TOML keeps NaN and
//! infinities, which JSON cannot). Request records are never stored here: they live in the
//! Parquet files and, until acknowledged, in the agents' spools.
//!
//! Each controller event is written as one write transaction of [`StoreOp`]s
//! ([`Store::apply`]), committed with fsync before the messages the event produced leave.
//!
//! File modes: the state directory is created 0700 and the database file 0600 (owner
//! only), whatever the umask.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use fleetbench_proto::pb;
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::ControllerError;

/// sweep id → [`SweepRow`].
const SWEEPS: TableDefinition<&str, &[u8]> = TableDefinition::new("sweeps");
/// (sweep id, point position) → [`PointRow`].
const POINTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("points");
/// agent name → [`AgentRow`].
const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");

/// File name of the database inside the state directory.
pub const STORE_FILE: &str = "controller.redb";

/// A sweep as stored: its spec (TOML, re-parsed with `SweepSpec::parse` on load) and
/// lifecycle.
#[derive(Clone, PartialEq, Message)]
pub struct SweepRow {
    /// The sweep's spec as TOML.
    #[prost(string, tag = "1")]
    pub spec_toml: String,
    /// File name the spec came from (for error messages when it is re-parsed).
    #[prost(string, tag = "2")]
    pub file_name: String,
    #[prost(int64, tag = "3")]
    pub submitted_ms: i64,
    /// `running`, `done` or `cancelled`.
    #[prost(string, tag = "4")]
    pub state: String,
    #[prost(int64, tag = "5")]
    pub finished_ms: i64,
    /// Result files written so far.
    #[prost(string, repeated, tag = "6")]
    pub result_files: Vec<String>,
    /// Agents that ran points of the sweep (their engines are released at the end).
    #[prost(string, repeated, tag = "7")]
    pub agents_used: Vec<String>,
    /// Replicate child sweeps: the parent id the user submitted under (else empty).
    #[prost(string, tag = "8")]
    pub replica_parent: String,
    /// Replicate child sweeps: the one agent that runs the child (else empty).
    #[prost(string, tag = "9")]
    pub replica_agent: String,
}

/// A point as stored. A point whose terminal state is not yet in the Parquet files is
/// stored as still running on its agent (decision 2), so a restart waits for its resend.
#[derive(Clone, PartialEq, Message)]
pub struct PointRow {
    /// `pending`, `running`, `done`, `failed`, `cancelled` or `skipped`.
    #[prost(string, tag = "1")]
    pub state: String,
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
    /// Agent of the current/last attempt (for `running`: the agent running it).
    #[prost(string, tag = "3")]
    pub agent: String,
    #[prost(string, tag = "4")]
    pub host: String,
    #[prost(string, tag = "5")]
    pub error: String,
    #[prost(uint32, tag = "6")]
    pub crash_retries: u32,
    /// The point's summary as TOML (empty: none).
    #[prost(string, tag = "7")]
    pub summary_toml: String,
    /// The finished attempt's report (it carries no request records).
    #[prost(message, optional, tag = "8")]
    pub finished: Option<pb::PointFinished>,
    #[prost(message, repeated, tag = "9")]
    pub engine_events: Vec<pb::EngineEvent>,
    /// The planned point, for points the sweep file does not expand to: the probes a
    /// `[search]` sweep adds as it goes (absent in rows stored before searches existed).
    #[prost(message, optional, tag = "10")]
    pub planned: Option<PlannedRow>,
}

/// A point's place in its sweep's matrix, as stored.
#[derive(Clone, PartialEq, Message)]
pub struct PlannedRow {
    #[prost(uint32, tag = "1")]
    pub gpus: u32,
    /// The workload's position in the sweep's `[matrix] workloads`.
    #[prost(uint32, tag = "2")]
    pub workload_index: u32,
    #[prost(uint32, tag = "4")]
    pub batch_size: u32,
    #[prost(double, tag = "5")]
    pub request_rate: f64,
}

/// An agent as stored: what it last registered with.
#[derive(Clone, PartialEq, Message)]
pub struct AgentRow {
    #[prost(message, optional, tag = "1")]
    pub inventory: Option<pb::Inventory>,
    #[prost(int64, tag = "2")]
    pub last_seen_ms: i64,
}

/// One change to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    Sweep {
        id: String,
        row: SweepRow,
    },
    Point {
        sweep_id: String,
        pos: u32,
        row: Box<PointRow>,
    },
    Agent {
        name: String,
        row: AgentRow,
    },
}

/// A stored sweep with its points, as loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedSweep {
    pub id: String,
    pub row: SweepRow,
    /// (position, point) in position order.
    pub points: Vec<(u32, PointRow)>,
}

/// Everything the store holds, as loaded at start-up.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Loaded {
    /// Sweeps in submission order.
    pub sweeps: Vec<LoadedSweep>,
    pub agents: Vec<(String, AgentRow)>,
}

/// The store's page cache.
const STORE_CACHE_BYTES: usize = 32 << 20;

/// The open database.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

fn store_err(path: &Path, e: impl Into<redb::Error>) -> ControllerError {
    ControllerError::Store {
        path: path.to_path_buf(),
        source: Box::new(e.into()),
    }
}

fn decode_err(path: &Path, what: &str, e: prost::DecodeError) -> ControllerError {
    ControllerError::BadStore {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, creating the directory if needed. What it
    /// creates is owner-only (directory 0700, file 0600: the store holds sweep specs,
    /// engine events and agents' inventories); existing ones keep their modes.
    pub fn open(dir: &Path) -> Result<Store, ControllerError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| ControllerError::io(dir, e))?;
        let path = dir.join(STORE_FILE);
        // Created here with its mode (redb would create it with the umask's).
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| ControllerError::io(&path, e))?;
        // redb caches up to 1 GiB by default, filled by what is written: a controller's
        // RSS grew with every sweep it stored. It reads the store at start-up and for
        // archived sweeps only.
        let db = Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(&path)
            .map_err(|e| store_err(&path, e))?;
        // Create the tables so a read of a fresh store finds them.
        let txn = db.begin_write().map_err(|e| store_err(&path, e))?;
        {
            txn.open_table(SWEEPS).map_err(|e| store_err(&path, e))?;
            txn.open_table(POINTS).map_err(|e| store_err(&path, e))?;
            txn.open_table(AGENTS).map_err(|e| store_err(&path, e))?;
        }
        txn.commit().map_err(|e| store_err(&path, e))?;
        Ok(Store { db, path })
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `ops` in one write transaction, durable (fsynced) when this returns.
    pub fn apply(&self, ops: &[StoreOp]) -> Result<(), ControllerError> {
        if ops.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        let txn = self.db.begin_write().map_err(|e| store_err(path, e))?;
        {
            let mut sweeps = txn.open_table(SWEEPS).map_err(|e| store_err(path, e))?;
            let mut points = txn.open_table(POINTS).map_err(|e| store_err(path, e))?;
            let mut agents = txn.open_table(AGENTS).map_err(|e| store_err(path, e))?;
            for op in ops {
                match op {
                    StoreOp::Sweep { id, row } => {
                        sweeps
                            .insert(id.as_str(), row.encode_to_vec().as_slice())
                            .map_err(|e| store_err(path, e))?;
                    }
                    StoreOp::Point { sweep_id, pos, row } => {
                        points
                            .insert((sweep_id.as_str(), *pos), row.encode_to_vec().as_slice())
                            .map_err(|e| store_err(path, e))?;
                    }
                    StoreOp::Agent { name, row } => {
                        agents
                            .insert(name.as_str(), row.encode_to_vec().as_slice())
                            .map_err(|e| store_err(path, e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| store_err(path, e))?;
        Ok(())
    }

    /// Reads sweeps `ids` (those it holds) with their points, without the agents: an
    /// archived sweep's points, on demand.
    pub fn load_sweeps(&self, ids: &[String]) -> Result<Vec<LoadedSweep>, ControllerError> {
        let path = &self.path;
        let txn = self.db.begin_read().map_err(|e| store_err(path, e))?;
        let sweeps = txn.open_table(SWEEPS).map_err(|e| store_err(path, e))?;
        let points = txn.open_table(POINTS).map_err(|e| store_err(path, e))?;
        let mut out = Vec::new();
        for id in ids {
            let Some(v) = sweeps.get(id.as_str()).map_err(|e| store_err(path, e))? else {
                continue;
            };
            let row = SweepRow::decode(v.value()).map_err(|e| decode_err(path, id, e))?;
            out.push(LoadedSweep {
                id: id.clone(),
                row,
                points: self.point_rows(&points, id)?,
            });
        }
        Ok(out)
    }

    /// The point rows of sweep `id`, in position order.
    fn point_rows(
        &self,
        points: &redb::ReadOnlyTable<(&'static str, u32), &'static [u8]>,
        id: &str,
    ) -> Result<Vec<(u32, PointRow)>, ControllerError> {
        let path = &self.path;
        let mut rows = Vec::new();
        let range = points
            .range((id, 0u32)..=(id, u32::MAX))
            .map_err(|e| store_err(path, e))?;
        for p in range {
            let (pk, pv) = p.map_err(|e| store_err(path, e))?;
            let pos = pk.value().1;
            let prow = PointRow::decode(pv.value())
                .map_err(|e| decode_err(path, &format!("{id} point {pos}"), e))?;
            rows.push((pos, prow));
        }
        Ok(rows)
    }

    /// Reads the whole store.
    pub fn load(&self) -> Result<Loaded, ControllerError> {
        let path = &self.path;
        let txn = self.db.begin_read().map_err(|e| store_err(path, e))?;
        let sweeps = txn.open_table(SWEEPS).map_err(|e| store_err(path, e))?;
        let points = txn.open_table(POINTS).map_err(|e| store_err(path, e))?;
        let agents = txn.open_table(AGENTS).map_err(|e| store_err(path, e))?;
        let mut out = Loaded::default();
        for entry in sweeps.iter().map_err(|e| store_err(path, e))? {
            let (k, v) = entry.map_err(|e| store_err(path, e))?;
            let id = k.value().to_string();
            let row = SweepRow::decode(v.value()).map_err(|e| decode_err(path, &id, e))?;
            let points = self.point_rows(&points, &id)?;
            out.sweeps.push(LoadedSweep { id, row, points });
        }
        out.sweeps
            .sort_by(|a, b| (a.row.submitted_ms, &a.id).cmp(&(b.row.submitted_ms, &b.id)));
        for entry in agents.iter().map_err(|e| store_err(path, e))? {
            let (k, v) = entry.map_err(|e| store_err(path, e))?;
            let name = k.value().to_string();
            let row = AgentRow::decode(v.value()).map_err(|e| decode_err(path, &name, e))?;
            out.agents.push((name, row));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_created_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state").join("controller");
        let store = Store::open(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("state")), 0o700);
        assert_eq!(mode(store.path()), 0o600);
        drop(store);
        // Reopened: still the same file, still owner-only.
        let store = Store::open(&dir).unwrap();
        assert_eq!(mode(store.path()), 0o600);
    }

    #[test]
    fn ops_round_trip_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ops = vec![
            StoreOp::Sweep {
                id: "b".into(),
                row: SweepRow {
                    spec_toml: "name = \"b\"".into(),
                    submitted_ms: 2,
                    state: "running".into(),
                    ..Default::default()
                },
            },
            StoreOp::Sweep {
                id: "a".into(),
                row: SweepRow {
                    submitted_ms: 5,
                    state: "done".into(),
                    result_files: vec!["x.parquet".into()],
                    ..Default::default()
                },
            },
            StoreOp::Point {
                sweep_id: "b".into(),
                pos: 1,
                row: Box::new(PointRow {
                    state: "done".into(),
                    attempt: 1,
                    finished: Some(pb::PointFinished {
                        point_id: "b/p001".into(),
                        started_unix_us: 42,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            StoreOp::Point {
                sweep_id: "b".into(),
                pos: 0,
                row: Box::new(PointRow {
                    state: "running".into(),
                    agent: "ag".into(),
                    attempt: 2,
                    ..Default::default()
                }),
            },
            StoreOp::Agent {
                name: "ag".into(),
                row: AgentRow {
                    inventory: Some(pb::Inventory {
                        agent_name: "ag".into(),
                        ..Default::default()
                    }),
                    last_seen_ms: 9,
                },
            },
        ];
        {
            let store = Store::open(dir.path()).unwrap();
            store.apply(&ops).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        let ids: Vec<&str> = loaded.sweeps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec!["b", "a"], "submission order");
        let b = &loaded.sweeps[0];
        assert_eq!(b.points.len(), 2);
        assert_eq!((b.points[0].0, b.points[0].1.attempt), (0, 2));
        assert_eq!(
            b.points[1].1.finished.as_ref().unwrap().started_unix_us,
            42,
            "PointFinished kept"
        );
        assert!(
            loaded.sweeps[1].points.is_empty(),
            "points keyed by their sweep"
        );
        assert_eq!(loaded.agents[0].1.last_seen_ms, 9);
        // Overwrites replace.
        store
            .apply(&[StoreOp::Point {
                sweep_id: "b".into(),
                pos: 0,
                row: Box::new(PointRow {
                    state: "done".into(),
                    ..Default::default()
                }),
            }])
            .unwrap();
        let again = store.load().unwrap();
        assert_eq!(again.sweeps[0].points[0].1.state, "done");
        assert_eq!(again.sweeps[0].points.len(), 2);
    }
}
