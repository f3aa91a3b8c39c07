//! Unit tests of the dispatcher: which lane a point goes to, and which idle engines stop
//! to make room.

use super::*;

fn key(model: &str, gpus: u32) -> EngineKey {
    EngineKey {
        spec: pb::EngineSpec {
            model: model.into(),
            ..Default::default()
        },
        gpus,
    }
}

fn lane(busy: bool, engine: Option<EngineKey>, last_used: u64) -> LaneView {
    LaneView {
        busy,
        engine,
        last_used,
    }
}

#[test]
fn a_warm_idle_engine_of_the_same_configuration_takes_the_point() {
    let lanes = [
        lane(false, Some(key("a", 4)), 1),
        lane(false, Some(key("b", 4)), 2),
    ];
    assert_eq!(
        route(&lanes, &key("b", 4), 8, 2),
        Route {
            evict: vec![],
            lane: 1
        }
    );
}

#[test]
fn two_four_gpu_engines_run_side_by_side_on_eight_gpus() {
    let lanes = [lane(true, Some(key("a", 4)), 1)];
    assert_eq!(
        route(&lanes, &key("b", 4), 8, 2),
        Route {
            evict: vec![],
            lane: 1
        }
    );
    // A third configuration waits for an idle engine to go: the older one first.
    let lanes = [
        lane(false, Some(key("a", 4)), 1),
        lane(false, Some(key("b", 4)), 2),
    ];
    assert_eq!(
        route(&lanes, &key("c", 4), 8, 2),
        Route {
            evict: vec![0],
            lane: 0
        }
    );
}

#[test]
fn gpus_are_freed_by_stopping_idle_engines_until_the_point_fits() {
    let lanes = [
        lane(false, Some(key("a", 2)), 3),
        lane(false, Some(key("b", 2)), 1),
        lane(true, Some(key("c", 2)), 4),
        lane(false, None, 0),
    ];
    // 8 GPUs, 6 held: a 6-GPU engine needs both idle engines gone (least recently
    // used first) and runs on the first emptied lane.
    assert_eq!(
        route(&lanes, &key("d", 6), 8, 4),
        Route {
            evict: vec![1, 0],
            lane: 0
        }
    );
    // A 2-GPU engine fits beside them and uses the lane without an engine.
    assert_eq!(
        route(&lanes, &key("d", 2), 8, 4),
        Route {
            evict: vec![],
            lane: 3
        }
    );
}

#[test]
fn one_engine_at_a_time_restarts_only_on_a_new_configuration() {
    let lanes = [lane(false, Some(key("a", 1)), 1)];
    assert_eq!(route(&lanes, &key("a", 1), 2, 1).evict, Vec::<usize>::new());
    assert_eq!(
        route(&lanes, &key("a", 2), 2, 1),
        Route {
            evict: vec![0],
            lane: 0
        }
    );
    // No GPUs: every engine takes the host's one slot.
    assert_eq!(
        route(&lanes, &key("b", 1), 0, 4),
        Route {
            evict: vec![0],
            lane: 0
        }
    );
}

#[tokio::test]
async fn a_point_that_breaks_the_policy_fails_before_any_lane_sees_it() {
    let outbox = Arc::new(Outbox::new());
    let cancels: CancelMap = Arc::default();
    cancels
        .lock()
        .unwrap()
        .insert("p1".into(), CancellationToken::new());
    let mut d = Dispatcher::new(
        Arc::new(AgentConfig::default()),
        crate::http_clients().unwrap(),
        outbox.clone(),
        cancels.clone(),
        Arc::default(),
        Arc::new(gpu::Inventory {
            gpus: Vec::new(),
            driver: String::new(),
            source: "none".into(),
        }),
        crate::metrics::AgentMetrics::new(),
    );
    let point = pb::PointSpec {
        sweep_id: "s".into(),
        point_id: "p1".into(),
        attempt: 2,
        engine: Some(pb::EngineSpec {
            runtime_kind: pb::Runtime::Docker.into(),
            image: "evil/x:1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    d.dispatch(Box::new(point), &CancellationToken::new()).await;
    assert!(d.lanes.is_empty(), "no lane was started for it");
    assert!(cancels.lock().unwrap().is_empty());
    let sent = outbox.next().await;
    let Some(Msg::PointFinished(pf)) = sent.msg else {
        panic!("{sent:?}")
    };
    assert_eq!((pf.point_id.as_str(), pf.attempt), ("p1", 2));
    assert!(!pf.ok && !pf.engine_crashed);
    assert!(
        pf.error
            .starts_with("agent policy: image \"evil/x:1\" is not in policy.images"),
        "{}",
        pf.error
    );
}
