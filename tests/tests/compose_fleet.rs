//! The compose fleet (`deploy/compose/`) on the machine's real Docker engine: the
//! FROM-scratch controller and agent images (`deploy/docker/build-images.sh`), a controller
//! and three agents in their own containers on a compose network, mutual TLS with
//! certificates made by the real `controllerctl certs`. From the host, through the real
//! `controllerctl` over TLS with an operator token: the three agents register, the shipped
//! replicate sweep (`deploy/compose/sweep.toml`) is submitted, one agent's container is
//! killed (`docker kill`) while its point has records in the spool, and started again
//! (`docker start`): the restarted agent finds the interrupted attempt in its spool volume,
//! the controller re-runs the point, and the Parquet results hold every point of every
//! replica, each point's request rows exactly once, every host's rows. `docker-compose down
//! -v` leaves no container, network or volume of the project; a failing test cleans up too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Seek as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleetbench_proto::spec::SweepSpec;
use fleetbench_results::read::{read_point_summaries, read_requests};
use fleetbench_tests::{free_local_addr, workspace_bin};

const AGENTS: [&str; 3] = ["agent-1", "agent-2", "agent-3"];
/// The agent whose container is killed mid-point.
const VICTIM: &str = "agent-2";
/// The point of the victim's replica that is interrupted: the second, so its engine is warm
/// and the kill lands in the measured load, not in the engine start.
const VICTIM_POINT: &str = "p001";
/// The operator `controllerctl certs` makes a token for.
const OPERATOR: &str = "ci";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn compose_dir() -> PathBuf {
    repo().join("deploy").join("compose")
}

fn image(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// What a command did: its exit code (`None` when it was killed at its time limit or by a
/// signal), its output.
struct Ran {
    what: String,
    code: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with everything the command said unless it exited 0.
    fn expect_ok(self) -> Ran {
        assert!(self.ok(), "{self}");
        self
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: exit {:?}{}\n--- stdout\n{}--- stderr\n{}",
            self.what,
            self.code,
            if self.timed_out {
                " (killed at its time limit)"
            } else {
                ""
            },
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `cmd` to its end, at most `limit` (then it is killed).
fn run(cmd: &mut Command, limit: Duration) -> Ran {
    let what = format!("{cmd:?}");
    let mut out = tempfile::tempfile().unwrap();
    let mut err = tempfile::tempfile().unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let deadline = Instant::now() + limit;
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (Some(status), false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |f: &mut std::fs::File| {
        let mut s = String::new();
        f.rewind().unwrap();
        f.read_to_string(&mut s).unwrap();
        s
    };
    Ran {
        what,
        code: status.and_then(|s| s.code()),
        timed_out,
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}

fn docker(args: &[&str], limit: Duration) -> Ran {
    run(Command::new("docker").args(args), limit)
}

/// Fails, saying what to do, when the Docker engine, docker-compose or an image is missing:
/// this test never skips.
fn preflight(images: &[String]) {
    let engine = docker(
        &["version", "--format", "{{.Server.Version}}"],
        Duration::from_secs(30),
    );
    assert!(
        engine.ok(),
        "cannot reach the Docker engine (the compose fleet runs on it; .ci/run starts dockerd):\n{engine}"
    );
    let compose = run(
        Command::new("docker-compose").arg("version"),
        Duration::from_secs(30),
    );
    assert!(
        compose.ok(),
        "docker-compose (v1) does not run: install it (Debian/Ubuntu: apt-get install docker-compose; .ci/run does):\n{compose}"
    );
    for image in images {
        let found = docker(
            &["image", "inspect", "--format", "{{.Id}}", image],
            Duration::from_secs(30),
        );
        assert!(
            found.ok(),
            "image {image} not found in the local Docker engine: run deploy/docker/build-images.sh (the README's test command does):\n{found}"
        );
    }
}

/// One compose project: its name, its environment, its temporary folder (certificates,
/// results). Dropped, it takes the project down with its volumes, so a failing test leaves
/// nothing behind.
struct Fleet {
    project: String,
    env: Vec<(String, String)>,
    tmp: tempfile::TempDir,
    port: u16,
    down: bool,
}

impl Fleet {
    fn new() -> Fleet {
        let tmp = tempfile::tempdir().unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let project = format!("fbcompose{}x{nanos}", std::process::id());
        let results = tmp.path().join("results");
        std::fs::create_dir(&results).unwrap();
        // The containers run as this test's user: the owner of the certificate files
        // (keys are 0600) and of the results folder, which it reads and deletes afterwards.
        let me = std::fs::metadata(tmp.path()).unwrap();
        let port = free_local_addr().port();
        let env = vec![
            (
                "FLEETBENCH_COMPOSE_CERTS".to_string(),
                tmp.path().join("certs").display().to_string(),
            ),
            (
                "FLEETBENCH_COMPOSE_RESULTS".to_string(),
                results.display().to_string(),
            ),
            ("FLEETBENCH_COMPOSE_PORT".to_string(), port.to_string()),
            ("FLEETBENCH_UID".to_string(), me.uid().to_string()),
            ("FLEETBENCH_GID".to_string(), me.gid().to_string()),
        ];
        Fleet {
            project,
            env,
            tmp,
            port,
            down: false,
        }
    }

    fn certs(&self) -> PathBuf {
        self.tmp.path().join("certs")
    }

    fn results(&self) -> PathBuf {
        self.tmp.path().join("results")
    }

    fn compose(&self, args: &[&str], limit: Duration) -> Ran {
        let file = compose_dir().join("docker-compose.yml");
        let mut cmd = Command::new("docker-compose");
        cmd.args(["--ansi", "never"])
            .args(["-p", &self.project, "-f"])
            .arg(&file)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        run(&mut cmd, limit)
    }

    /// The real `controllerctl`, over TLS to the published port, as the admin operator
    /// (bearer token).
    fn ctl(&self, args: &[&str], limit: Duration) -> Ran {
        let mut cmd = Command::new(workspace_bin("controllerctl"));
        for var in [
            "FLEETBENCH_CONTROLLER",
            "FLEETBENCH_CA",
            "FLEETBENCH_CERT",
            "FLEETBENCH_KEY",
            "FLEETBENCH_TOKEN",
            "FLEETBENCH_TOKEN_FILE",
            "FLEETBENCH_RESULTS",
        ] {
            cmd.env_remove(var);
        }
        cmd.current_dir(self.tmp.path())
            .args(["--controller", &format!("https://127.0.0.1:{}", self.port)])
            .arg("--ca")
            .arg(self.certs().join("ca.pem"))
            .arg("--token-file")
            .arg(self.certs().join(format!("token-{OPERATOR}.txt")))
            .args(args);
        run(&mut cmd, limit)
    }

    /// The id of a service's container.
    fn container(&self, service: &str) -> String {
        let ran = self
            .compose(&["ps", "-q", service], Duration::from_secs(60))
            .expect_ok();
        let id = ran.stdout.trim().to_string();
        assert!(!id.is_empty(), "no container for {service}: {ran}");
        id
    }

    /// The agents as `controllerctl agents` lists them: name → the rest of the line
    /// (state, host, GPUs, labels, the point it runs), once the controller answers.
    fn agents(&self) -> Option<BTreeMap<String, String>> {
        let ran = self.ctl(&["agents"], Duration::from_secs(30));
        ran.ok().then(|| {
            ran.stdout
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(name, rest)| (name.to_string(), rest.trim().to_string()))
                .collect()
        })
    }

    /// Polls `controllerctl agents` until `check` holds for the list, at most `secs`.
    fn wait_agents(
        &self,
        what: &str,
        secs: u64,
        check: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> BTreeMap<String, String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(agents) = self.agents() {
                if check(&agents) {
                    return agents;
                }
                last = Some(agents);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "timed out after {secs} s waiting for {what}; last agent list: {last:#?}\n{}",
            self.ctl(&["agents"], Duration::from_secs(30))
        );
    }

    /// Containers, networks and volumes carrying the project's label.
    fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut left = Vec::new();
        for (kind, args) in [
            ("container", vec!["ps", "-a", "-q", "--filter", &label]),
            ("network", vec!["network", "ls", "-q", "--filter", &label]),
            ("volume", vec!["volume", "ls", "-q", "--filter", &label]),
        ] {
            let ran = docker(&args, Duration::from_secs(60)).expect_ok();
            left.extend(ran.stdout.lines().map(|id| format!("{kind} {id}")));
        }
        left
    }

    fn take_down(&mut self) -> Ran {
        self.down = true;
        self.compose(
            &["down", "-v", "--remove-orphans", "--timeout", "10"],
            Duration::from_secs(120),
        )
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        if std::thread::panicking() {
            let logs = self.compose(
                &["logs", "--no-color", "--tail", "60"],
                Duration::from_secs(60),
            );
            eprintln!("--- the fleet's last log lines ---\n{logs}");
        }
        let down = self.take_down();
        if !down.ok() {
            eprintln!("cleaning up the compose project failed:\n{down}");
        }
    }
}

/// Whether the spool of `agent` (in its container's volume) holds a file of `point_id`'s
/// attempt: the agent writes record batches there before sending them. Read with
/// `docker cp` (the image has no shell to list it with).
fn spool_has_point(container: &str, agent: &str, point_id: &str, scratch: &Path) -> bool {
    let dest = scratch.join("spool-copy");
    let _ = std::fs::remove_dir_all(&dest);
    let ran = docker(
        &[
            "cp",
            &format!("{container}:/var/lib/fleetbench-agent/spool/{agent}"),
            &dest.display().to_string(),
        ],
        Duration::from_secs(30),
    );
    if !ran.ok() {
        return false;
    }
    let hex: String = point_id.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::read_dir(&dest).unwrap().flatten().any(|e| {
        let name = e.file_name().to_string_lossy().to_string();
        name.starts_with(&format!("{hex}."))
            && name.ends_with(".spool")
            && e.metadata().map(|m| m.len() > 0).unwrap_or(false)
    })
}

fn find_files(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            find_files(&p, suffix, out);
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
}

/// The one file under `dir` whose name ends with `suffix`.
fn one_file(dir: &Path, suffix: &str) -> PathBuf {
    let mut found = Vec::new();
    find_files(dir, suffix, &mut found);
    assert_eq!(found.len(), 1, "files ending {suffix}: {found:?}");
    found.remove(0)
}

#[test]
fn compose_fleet_survives_a_killed_agent_container_and_loses_nothing() {
    let started = Instant::now();
    let controller_image = image("FLEETBENCH_CONTROLLER_IMAGE", "fleetbench/controller:dev");
    let agent_image = image("FLEETBENCH_AGENT_IMAGE", "fleetbench/agent:dev");
    preflight(&[controller_image, agent_image]);

    let sweep_file = compose_dir().join("sweep.toml");
    let spec = SweepSpec::parse(
        &std::fs::read_to_string(&sweep_file).unwrap(),
        &sweep_file.display().to_string(),
    )
    .unwrap();
    let plan = spec.expand();
    let waves = *spec.load.waves.get_ref();
    assert!(
        plan.len() >= 2,
        "the victim's point {VICTIM_POINT} must exist"
    );

    let mut fleet = Fleet::new();
    assert!(fleet.leftovers().is_empty(), "a fresh project name");
    let names = AGENTS.join(",");
    fleet
        .ctl(
            &[
                "certs",
                "--out",
                &fleet.certs().display().to_string(),
                "--controller-names",
                "controller,localhost,127.0.0.1",
                "--agents",
                &names,
                "--operators",
                &format!("{OPERATOR}:admin"),
            ],
            Duration::from_secs(60),
        )
        .expect_ok();

    fleet
        .compose(&["up", "-d"], Duration::from_secs(180))
        .expect_ok();

    // The three agents register over mutual TLS, each with its host name and label.
    let agents = fleet.wait_agents("the three agents to connect", 90, |agents| {
        AGENTS.iter().all(|a| {
            agents
                .get(*a)
                .is_some_and(|rest| !rest.starts_with("disconnected"))
        })
    });
    for a in AGENTS {
        let line = &agents[a];
        assert!(line.contains(&format!("host={a} ")), "{a}: {line}");
        assert!(line.contains("labels=pool=compose"), "{a}: {line}");
    }

    // The shipped replicate sweep: one child sweep per agent.
    let submitted = fleet
        .ctl(
            &["submit", &sweep_file.display().to_string()],
            Duration::from_secs(60),
        )
        .expect_ok();
    let first = submitted.stdout.lines().next().unwrap_or_default();
    let parent = first
        .strip_prefix("submitted ")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{submitted}"))
        .to_string();
    let children: BTreeSet<String> = submitted
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("replica "))
        .map(str::to_string)
        .collect();
    let want: BTreeSet<String> = AGENTS.iter().map(|a| format!("{parent}.{a}")).collect();
    assert_eq!(children, want, "{submitted}");

    // The victim runs its second point and has spooled records of it: kill its container.
    let victim = fleet.container(VICTIM);
    let point = format!("{parent}.{VICTIM}/{VICTIM_POINT}");
    fleet.wait_agents(&format!("{VICTIM} to run {point}"), 120, |agents| {
        agents
            .get(VICTIM)
            .is_some_and(|rest| rest.contains(&format!("running {point}")))
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !spool_has_point(&victim, VICTIM, &point, fleet.tmp.path()) {
        assert!(
            Instant::now() < deadline,
            "{point} never had records in {VICTIM}'s spool"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    docker(&["kill", &victim], Duration::from_secs(60)).expect_ok();
    let running = docker(
        &["inspect", "--format", "{{.State.Running}}", &victim],
        Duration::from_secs(30),
    )
    .expect_ok();
    assert_eq!(running.stdout.trim(), "false", "{running}");
    // The controller sees the agent go; the point is not finished.
    fleet.wait_agents(&format!("{VICTIM} to be disconnected"), 60, |agents| {
        agents
            .get(VICTIM)
            .is_some_and(|rest| rest.starts_with("disconnected"))
    });

    // Started again: the same container, its spool volume with the interrupted attempt.
    docker(&["start", &victim], Duration::from_secs(60)).expect_ok();
    fleet.wait_agents(&format!("{VICTIM} to reconnect"), 60, |agents| {
        agents
            .get(VICTIM)
            .is_some_and(|rest| !rest.starts_with("disconnected"))
    });

    // The sweep ends, every point done (watch exits 0 only then).
    fleet
        .ctl(&["watch", &parent], Duration::from_secs(180))
        .expect_ok();
    let logs = docker(&["logs", &victim], Duration::from_secs(30)).expect_ok();
    let logs = format!("{}{}", logs.stdout, logs.stderr);
    assert!(
        logs.lines().any(|l| l
            .contains("discarding spooled attempt interrupted by the agent's death")
            && l.contains(&point)),
        "the restarted agent did not find {point}'s attempt in its spool volume:\n{logs}"
    );

    // The Parquet results, read with the workspace's reader: every point of every replica
    // done, each point's request rows exactly once, from the attempt that finished.
    for agent in AGENTS {
        let child = format!("{parent}.{agent}");
        let points = read_point_summaries(&one_file(
            &fleet.results(),
            &format!("{child}.points.parquet"),
        ))
        .unwrap();
        let rows = read_requests(&one_file(
            &fleet.results(),
            &format!("{child}.requests.parquet"),
        ))
        .unwrap();
        assert_eq!(points.len(), plan.len(), "{child}: one row per point");
        let indexes: BTreeSet<u32> = points.iter().map(|p| p.meta.point_index).collect();
        assert_eq!(indexes.len(), plan.len(), "{child}: {indexes:?}");
        for planned in &plan {
            let p = points
                .iter()
                .find(|p| p.meta.point_index == planned.index)
                .unwrap_or_else(|| panic!("{child}: point {} missing", planned.index));
            assert_eq!(p.meta.state, "done", "{:?}", p.meta);
            assert_eq!(
                (p.meta.host.as_str(), p.meta.agent.as_str()),
                (agent, agent)
            );
            let want = planned.batch_size * waves;
            let mine: Vec<_> = rows
                .iter()
                .filter(|(pid, _, _)| *pid == p.meta.point_id)
                .collect();
            assert_eq!(
                mine.len() as u32,
                want,
                "{}: {} request rows, planned {want}",
                p.meta.point_id,
                mine.len()
            );
            let unique: BTreeSet<(u32, u32)> = mine
                .iter()
                .map(|(_, _, r)| (r.wave, r.request_index))
                .collect();
            assert_eq!(
                unique.len(),
                mine.len(),
                "duplicates in {}",
                p.meta.point_id
            );
            assert!(
                mine.iter()
                    .all(|(_, attempt, _)| *attempt == p.meta.attempt),
                "{}: rows of another attempt than {}",
                p.meta.point_id,
                p.meta.attempt
            );
            assert_eq!((p.completed, p.failed), (want, 0), "{:?}", p.meta);
            // Only the interrupted point ran twice.
            let attempt = if p.meta.point_id == point { 2 } else { 1 };
            assert_eq!(p.meta.attempt, attempt, "{:?}", p.meta);
        }
        assert_eq!(
            rows.len() as u32,
            plan.iter().map(|p| p.batch_size * waves).sum::<u32>()
        );
    }
    // The operator's view of the same folder: every host's points.
    let json = fleet
        .ctl(
            &[
                "results",
                "--dir",
                &fleet.results().display().to_string(),
                "--format",
                "json",
            ],
            Duration::from_secs(60),
        )
        .expect_ok();
    let listed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for p in listed.as_array().unwrap() {
        assert_eq!(p["state"], "done", "{p}");
        *per_host
            .entry(p["host"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let want: BTreeMap<String, usize> =
        AGENTS.iter().map(|a| (a.to_string(), plan.len())).collect();
    assert_eq!(per_host, want, "{listed}");

    // Down with its volumes: nothing of the project is left.
    let down = fleet.take_down();
    assert!(down.ok(), "{down}");
    let left = fleet.leftovers();
    assert!(left.is_empty(), "left behind by down -v: {left:?}");
    eprintln!("compose fleet test took {:?}", started.elapsed());
}
