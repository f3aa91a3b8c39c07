//! Unit tests of a point's load: the plan of each mode.

use super::*;

fn point(
    mode: pb::LoadMode,
    batch: u32,
    rate: f64,
    load: pb::LoadSpec,
) -> (pb::PointSpec, pb::LoadSpec) {
    let load = pb::LoadSpec {
        load_mode: mode.into(),
        ..load
    };
    (
        pb::PointSpec {
            batch_size: batch,
            request_rate: rate,
            load: Some(load.clone()),
            ..Default::default()
        },
        load,
    )
}

#[test]
fn plans_follow_the_mode() {
    let (p, l) = point(
        pb::LoadMode::Burst,
        4,
        0.0,
        pb::LoadSpec {
            waves: 3,
            ..Default::default()
        },
    );
    let plan = Plan::from_point(&p, &l, None).unwrap();
    assert_eq!(plan, Plan::Burst { batch: 4, waves: 3 });
    assert_eq!(plan.prompts_needed(), 12);

    let (p, l) = point(
        pb::LoadMode::Concurrency,
        8,
        0.0,
        pb::LoadSpec {
            requests: 100,
            ..Default::default()
        },
    );
    assert_eq!(
        Plan::from_point(&p, &l, None).unwrap().prompts_needed(),
        100
    );
    let (p, l) = point(
        pb::LoadMode::Concurrency,
        8,
        0.0,
        pb::LoadSpec {
            duration_s: 5.0,
            ..Default::default()
        },
    );
    assert_eq!(
        Plan::from_point(&p, &l, None).unwrap().prompts_needed(),
        MIN_PROMPT_POOL
    );

    let (p, l) = point(
        pb::LoadMode::Rate,
        0,
        100.0,
        pb::LoadSpec {
            duration_s: 2.0,
            arrival_kind: pb::Arrival::Constant.into(),
            ..Default::default()
        },
    );
    let plan = Plan::from_point(&p, &l, None).unwrap();
    assert!((200..=201).contains(&plan.prompts_needed()), "{plan:?}");

    let (p, l) = point(
        pb::LoadMode::Rate,
        0,
        0.0,
        pb::LoadSpec {
            duration_s: 2.0,
            ..Default::default()
        },
    );
    assert!(Plan::from_point(&p, &l, None).is_err());
    // A mode this agent does not know (a newer controller's).
    let (p, l) = point(pb::LoadMode::Burst, 1, 0.0, pb::LoadSpec::default());
    let l = pb::LoadSpec { load_mode: 99, ..l };
    assert!(Plan::from_point(&p, &l, None).is_err());
}
