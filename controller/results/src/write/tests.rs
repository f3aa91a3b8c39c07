//! Tests of writing partitions, read back through [`crate::read`].

use super::*;
use crate::layout::find_result_files;
use crate::read::{open, read_metrics, read_point_summaries, read_requests};
use crate::schema::{itl_values_path, timestamp_type};
use crate::summary::{ClientStats, InFlight, Percentiles, ServerStats, summarize};
use fleetbench_proto::record::{ErrorKind, tpot};
use parquet::basic::Compression;

const T0: i64 = 1_700_000_000_000_000;

fn meta(point_index: u32) -> PointMeta {
    PointMeta {
        sweep_id: "sw-20260101-abc".into(),
        point_id: format!("p-{point_index:04}"),
        point_index,
        attempt: 2,
        model: "meta-llama/Llama-3.2-1B".into(),
        gpus: 2,
        host: "gpu-host-1".into(),
        agent: "agent-a".into(),
        batch_size: 3,
        input_tokens: 128,
        output_tokens: 16,
        state: "done".into(),
        error: String::new(),
        endpoint: "chat".into(),
        started_unix_us: T0 - 2_000_000,
        finished_unix_us: T0 + 5_000_000,
        mode: "rate".into(),
        request_rate: 12.5,
        client: ClientStats {
            cpu_s: 1.5,
            wall_s: 3.0,
            cores: 2,
        },
        fallbacks: vec!["ignore_eos refused (HTTP 422: a; b)".into(), "x".into()],
        warmup: Default::default(),
        gpu_model: String::new(),
        gpu_driver: String::new(),
        hardware: Default::default(),
        slo: None,
        workload: String::new(),
        data_sha256: String::new(),
        data_skipped: 0,
        stage_durations_s: Vec::new(),
        stage_loads: Vec::new(),
    }
}

fn records() -> Vec<RequestRecord> {
    vec![
        RequestRecord {
            request_index: 0,
            wave: 0,
            send_time_unix_us: T0,
            ttft_s: Some(0.125),
            e2el_s: Some(1.625),
            tpot_s: tpot(0.125, 1.625, 16),
            itl_s: vec![0.1, 0.2, 0.30000000000000004],
            input_tokens: Some(128),
            output_tokens: Some(16),
            target_input_tokens: 128,
            target_output_tokens: 16,
            content_chunks: 4,
            error_kind: None,
            error: String::new(),
            endpoint: "chat".into(),
            usage_reported: true,
            scheduled_offset_s: 0.0,
            send_offset_s: 0.000_25,
            retries: 0,
        },
        RequestRecord {
            request_index: 1,
            wave: 0,
            send_time_unix_us: T0 + 17,
            ttft_s: Some(0.25),
            e2el_s: Some(0.25),
            tpot_s: None,
            itl_s: vec![],
            input_tokens: None,
            output_tokens: Some(1),
            target_input_tokens: 128,
            target_output_tokens: 16,
            content_chunks: 1,
            error_kind: None,
            error: String::new(),
            endpoint: "completions".into(),
            usage_reported: false,
            scheduled_offset_s: 0.08,
            send_offset_s: 0.081,
            retries: 0,
        },
        RequestRecord {
            request_index: 2,
            wave: 1,
            send_time_unix_us: T0 + 1_000_000,
            ttft_s: None,
            e2el_s: None,
            tpot_s: None,
            itl_s: vec![],
            input_tokens: None,
            output_tokens: None,
            target_input_tokens: 128,
            target_output_tokens: 16,
            content_chunks: 0,
            error_kind: Some(ErrorKind::HttpStatus),
            error: "HTTP 500: boom".into(),
            endpoint: "chat".into(),
            usage_reported: false,
            scheduled_offset_s: 0.08,
            send_offset_s: 0.081,
            retries: 0,
        },
    ]
}

fn metadata() -> PartitionMetadata {
    PartitionMetadata {
        sweep_id: "sw-20260101-abc".into(),
        engine_args: "--max-num-seqs 256".into(),
        version: "0.1.0".into(),
        ..PartitionMetadata::default()
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn partition_round_trips_exactly() {
    let root = tempfile::tempdir().unwrap();
    let recs = records();
    let done = summarize(meta(0), &recs, &[]);
    let mut failed_meta = meta(1);
    failed_meta.state = "failed".into();
    failed_meta.error = "engine OOM-killed".into();
    failed_meta.attempt = 1;
    let failed = summarize(failed_meta, &[], &[]);
    let mut done = done;
    done.in_flight = Some(InFlight {
        scrapes: 7,
        client_peak: 8.0,
        server_peak: 7.0,
    });
    done.server = ServerStats {
        running_max: Some(8.0),
        waiting_max: Some(0.0),
        kv_cache_usage_max: Some(0.125),
        preemptions: None,
        prefix_cache_queries: Some(4096.0),
        prefix_cache_hits: Some(1024.0),
    };
    done.meta.workload = "normal 512±128/128±32 prefix 4x384".into();
    done.meta.slo = Some(fleetbench_proto::spec::Slo {
        ttft: Some(fleetbench_proto::spec::Objective {
            threshold_s: 2.0,
            percentile: 99.0,
        }),
        ..Default::default()
    });
    done.goodput = Some(3.5);
    done.slo_attainment = Some(0.875);
    done.slo_verdict = "missed: ttft 87.5 % within 2000 ms (needs 99 %)".into();
    let points: Vec<(PointSummary, &[RequestRecord])> =
        vec![(done.clone(), recs.as_slice()), (failed.clone(), &[][..])];
    let samples = vec![
        MetricRow {
            point_id: "p-0000".into(),
            point_index: 0,
            attempt: 2,
            agent: "agent-a".into(),
            offset_s: 0.0,
            unix_ms: 1_767_225_600_123,
            metric: "vllm:num_requests_running".into(),
            value: 0.0,
        },
        MetricRow {
            point_id: "p-0000".into(),
            point_index: 0,
            attempt: 2,
            agent: "agent-a".into(),
            offset_s: 0.5,
            unix_ms: 1_767_225_600_623,
            metric: "vllm:num_requests_running".into(),
            value: 8.0,
        },
    ];

    let files = write_partition(
        root.path(),
        "sw-20260101-abc",
        "meta-llama/Llama-3.2-1B",
        2,
        &points,
        &samples,
        &metadata(),
    )
    .unwrap();

    let dir = root.path().join("model=meta-llama--Llama-3.2-1B/gpus=2");
    assert_eq!(
        files,
        PartitionFiles {
            requests: dir.join("sw-20260101-abc.requests.parquet"),
            points: dir.join("sw-20260101-abc.points.parquet"),
            metrics: dir.join("sw-20260101-abc.metrics.parquet"),
        }
    );
    assert_eq!(
        files_in(&dir),
        [
            "sw-20260101-abc.metrics.parquet",
            "sw-20260101-abc.points.parquet",
            "sw-20260101-abc.requests.parquet"
        ]
    );
    assert_eq!(read_metrics(&files.metrics).unwrap(), samples);

    let summaries = read_point_summaries(&files.points).unwrap();
    assert_eq!(summaries, vec![done, failed]);
    // the failed point really carries None percentiles
    assert_eq!(summaries[1].ttft_s, Percentiles::default());

    let read = read_requests(&files.requests).unwrap();
    let expected: Vec<(String, u32, RequestRecord)> = recs
        .iter()
        .map(|r| ("p-0000".to_owned(), 2, r.clone()))
        .collect();
    assert_eq!(read, expected);

    assert_eq!(
        read_metadata(&files.points).unwrap(),
        metadata().to_key_values()
    );
    assert_eq!(
        read_metadata(&files.requests).unwrap(),
        metadata().to_key_values()
    );
}

/// Earlier versions wrote zstd: such files (re-encoded here with zstd, as they were) still
/// read back exactly.
#[test]
fn files_written_with_zstd_by_earlier_versions_read_back() {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::ZstdLevel;
    let root = tempfile::tempdir().unwrap();
    let (files, done, recs) = one_point_partition(root.path());
    for path in [&files.points, &files.requests] {
        let reader = open(path).unwrap();
        let schema = reader.schema().clone();
        let batches: Vec<RecordBatch> = reader.build().unwrap().collect::<Result<_, _>>().unwrap();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap()))
            .set_key_value_metadata(Some(
                metadata()
                    .to_key_values()
                    .into_iter()
                    .map(|(k, v)| KeyValue::new(k, v))
                    .collect(),
            ))
            .build();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
        for b in &batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
        fs::write(path, out).unwrap();
        let column = open(path)
            .unwrap()
            .metadata()
            .row_group(0)
            .column(0)
            .clone();
        assert!(matches!(column.compression(), Compression::ZSTD(_)));
    }
    assert_eq!(read_point_summaries(&files.points).unwrap(), vec![done]);
    let expected: Vec<(String, u32, RequestRecord)> = recs
        .iter()
        .map(|r| ("p-0000".to_owned(), 2, r.clone()))
        .collect();
    assert_eq!(read_requests(&files.requests).unwrap(), expected);
}

/// A partition holding one finished point of [`records`]: its files, summary and rows.
fn one_point_partition(root: &Path) -> (PartitionFiles, PointSummary, Vec<RequestRecord>) {
    let recs = records();
    let done = summarize(meta(0), &recs, &[]);
    let points = vec![(done.clone(), recs.as_slice())];
    let files = write_partition(
        root,
        "sw-20260101-abc",
        "meta-llama/Llama-3.2-1B",
        2,
        &points,
        &[],
        &metadata(),
    )
    .unwrap();
    (files, done, recs)
}

#[test]
fn columns_avoid_partition_keys_and_use_utc_micros() {
    let root = tempfile::tempdir().unwrap();
    let (files, _, _) = one_point_partition(root.path());
    for path in [&files.points, &files.requests] {
        let builder = open(path).unwrap();
        let schema = builder.schema();
        assert!(schema.field_with_name("model").is_err());
        assert!(schema.field_with_name("gpus").is_err());
        assert!(schema.field_with_name("model_name").is_ok());
        assert!(schema.field_with_name("gpu_count").is_ok());
        let column = builder.metadata().row_group(0).column(0);
        assert_eq!(column.compression(), Compression::SNAPPY);
    }
    let builder = open(&files.requests).unwrap();
    let row_group = builder.metadata().row_group(0);
    let itl = row_group
        .columns()
        .iter()
        .find(|c| c.column_path() == &itl_values_path())
        .expect("the ITL leaf column");
    assert_eq!(itl.compression(), Compression::UNCOMPRESSED);
    assert!(itl.statistics().is_none());
    assert_eq!(
        builder
            .schema()
            .field_with_name("send_time")
            .unwrap()
            .data_type(),
        &timestamp_type()
    );
}

/// Sorted (point id, attempt, record) rows of a requests file.
fn rows_of(path: &Path) -> Vec<(String, u32, RequestRecord)> {
    let mut rows = read_requests(path).unwrap();
    rows.sort_by(|a, b| (&a.0, a.2.request_index).cmp(&(&b.0, b.2.request_index)));
    rows
}

fn update(
    root: &Path,
    rows: &[(PointSummary, &[RequestRecord])],
    summaries: &[PointSummary],
) -> PartitionFiles {
    update_partition(
        root,
        "sw-20260101-abc",
        "meta-llama/Llama-3.2-1B",
        2,
        &PartitionUpdate {
            rows,
            summaries,
            metrics: &[],
            metadata: &metadata(),
        },
        None,
    )
    .unwrap()
}

#[test]
fn updates_append_points_and_replace_a_rewritten_one() {
    let root = tempfile::tempdir().unwrap();
    let recs = records();
    let a1 = summarize(meta(0), &recs, &[]);
    let b = summarize(meta(1), &recs[..2], &[]);
    // A, then B: B's rows are appended, A's copied.
    update(
        root.path(),
        &[(a1.clone(), recs.as_slice())],
        std::slice::from_ref(&a1),
    );
    let files = update(
        root.path(),
        &[(b.clone(), &recs[..2])],
        &[a1.clone(), b.clone()],
    );
    let first_schema = open(&files.requests).unwrap().schema().clone();
    assert_eq!(
        open(&files.requests).unwrap().metadata().num_row_groups(),
        2,
        "one row group per point"
    );
    let mut expected: Vec<_> = recs
        .iter()
        .map(|r| ("p-0000".to_owned(), 2, r.clone()))
        .chain(
            recs[..2]
                .iter()
                .map(|r| ("p-0001".to_owned(), 2, r.clone())),
        )
        .collect();
    assert_eq!(rows_of(&files.requests), expected);

    // A again, with other rows (a resend after a controller restart): A's rows once.
    let a2 = summarize(meta(0), &recs[2..], &[]);
    let files = update(
        root.path(),
        &[(a2.clone(), &recs[2..])],
        &[a2.clone(), b.clone()],
    );
    expected.retain(|(p, _, _)| p != "p-0000");
    expected.extend(
        recs[2..]
            .iter()
            .map(|r| ("p-0000".to_owned(), 2, r.clone())),
    );
    expected.sort_by(|a, b| (&a.0, a.2.request_index).cmp(&(&b.0, b.2.request_index)));
    assert_eq!(rows_of(&files.requests), expected);
    let builder = open(&files.requests).unwrap();
    assert_eq!(
        builder.schema(),
        &first_schema,
        "same schema after appending"
    );
    assert_eq!(builder.metadata().num_row_groups(), 2);
    assert_eq!(
        read_metadata(&files.requests).unwrap(),
        metadata().to_key_values()
    );
    assert_eq!(read_point_summaries(&files.points).unwrap(), vec![a2, b]);
    // Only the three files: no temporary left behind.
    assert_eq!(
        files_in(&partition_dir(root.path(), "meta-llama/Llama-3.2-1B", 2)).len(),
        3
    );
}

fn prepare(root: &Path) -> Option<NextRequests> {
    prepare_next_requests(
        root,
        "sw-20260101-abc",
        "meta-llama/Llama-3.2-1B",
        2,
        &AtomicBool::new(false),
    )
    .unwrap()
}

#[test]
fn a_prepared_next_file_is_used_only_while_it_is_current() {
    let root = tempfile::tempdir().unwrap();
    let recs = records();
    let s0 = summarize(meta(0), &recs, &[]);
    let s1 = summarize(meta(1), &recs[..1], &[]);
    let s2 = summarize(meta(2), &recs[1..], &[]);
    // Nothing to prepare before the first write.
    assert!(prepare(root.path()).is_none());
    update(
        root.path(),
        &[(s0.clone(), &recs[..])],
        std::slice::from_ref(&s0),
    );
    let next = prepare(root.path()).unwrap();
    assert_eq!(next.points, HashSet::from([s0.meta.point_id.clone()]));
    let tmp = next.writer.as_ref().unwrap().tmp.clone();
    assert!(tmp.exists());
    let all = [s0.clone(), s1.clone()];
    let files = update_partition(
        root.path(),
        "sw-20260101-abc",
        "meta-llama/Llama-3.2-1B",
        2,
        &PartitionUpdate {
            rows: &[(s1.clone(), &recs[..1])],
            summaries: &all,
            metrics: &[],
            metadata: &metadata(),
        },
        Some(next),
    )
    .unwrap();
    assert!(!tmp.exists(), "the prepared file became the requests file");
    let points: Vec<String> = rows_of(&files.requests).into_iter().map(|r| r.0).collect();
    assert_eq!(points.len(), recs.len() + 1);
    assert_eq!(
        read_metadata(&files.requests).unwrap(),
        metadata().to_key_values()
    );
    // Prepared, then the file changes (point 0 re-written): the stale copy is dropped
    // and removed, and the write copies the current file itself.
    let stale = prepare(root.path()).unwrap();
    let stale_tmp = stale.writer.as_ref().unwrap().tmp.clone();
    update(
        root.path(),
        &[(s2.clone(), &recs[1..])],
        &[s0.clone(), s1.clone(), s2.clone()],
    );
    let files = update_partition(
        root.path(),
        "sw-20260101-abc",
        "meta-llama/Llama-3.2-1B",
        2,
        &PartitionUpdate {
            rows: &[(s0.clone(), &recs[..1])],
            summaries: &[s0.clone(), s1.clone(), s2.clone()],
            metrics: &[],
            metadata: &metadata(),
        },
        Some(stale),
    )
    .unwrap();
    assert!(!stale_tmp.exists());
    let mut by_point: Vec<(String, u32)> = rows_of(&files.requests)
        .into_iter()
        .map(|r| (r.0, r.2.request_index))
        .collect();
    by_point.sort();
    let mut want = vec![(s0.meta.point_id.clone(), recs[0].request_index)];
    want.push((s1.meta.point_id.clone(), recs[0].request_index));
    want.extend(
        recs[1..]
            .iter()
            .map(|r| (s2.meta.point_id.clone(), r.request_index)),
    );
    want.sort();
    assert_eq!(by_point, want);
    // A cancelled preparation leaves nothing behind.
    let cancelled = prepare_next_requests(
        root.path(),
        "sw-20260101-abc",
        "meta-llama/Llama-3.2-1B",
        2,
        &AtomicBool::new(true),
    )
    .unwrap();
    assert!(cancelled.is_none());
    let leftovers: Vec<_> = fs::read_dir(files.requests.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".next-") || n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn large_points_round_trip_through_the_chunked_encoders() {
    // More rows than one encoding chunk, ITL lists of varying length, failures mixed in,
    // and an update adding a second point after the first is on disk.
    let root = tempfile::tempdir().unwrap();
    let base = records();
    let big: Vec<RequestRecord> = (0..(2 * ENCODE_CHUNK_ROWS + 77))
        .map(|i| {
            let mut r = base[i % base.len()].clone();
            r.request_index = u32::try_from(i).unwrap();
            r.itl_s = (0..i % 7).map(|k| k as f64 / 3.0 + i as f64).collect();
            r
        })
        .collect();
    let first = summarize(meta(0), &big, &[]);
    let second = summarize(meta(1), &big[..10], &[]);
    update(
        root.path(),
        &[(first.clone(), &big[..])],
        std::slice::from_ref(&first),
    );
    let files = update(
        root.path(),
        &[(second.clone(), &big[..10])],
        &[first.clone(), second.clone()],
    );
    let rows = rows_of(&files.requests);
    let mut want: Vec<(String, u32, RequestRecord)> = big
        .iter()
        .map(|r| (first.meta.point_id.clone(), first.meta.attempt, r.clone()))
        .chain(
            big[..10]
                .iter()
                .map(|r| (second.meta.point_id.clone(), second.meta.attempt, r.clone())),
        )
        .collect();
    want.sort_by(|a, b| (&a.0, a.2.request_index).cmp(&(&b.0, b.2.request_index)));
    assert_eq!(rows, want);
}

#[test]
fn an_update_filters_row_groups_that_mix_points() {
    // write_partition puts all points in one row group (as older versions did).
    let root = tempfile::tempdir().unwrap();
    let recs = records();
    let a = summarize(meta(0), &recs, &[]);
    let b = summarize(meta(1), &recs[..1], &[]);
    write_partition(
        root.path(),
        "sw-20260101-abc",
        "meta-llama/Llama-3.2-1B",
        2,
        &[(a.clone(), recs.as_slice()), (b.clone(), &recs[..1])],
        &[],
        &metadata(),
    )
    .unwrap();
    let a2 = summarize(meta(0), &recs[..2], &[]);
    let files = update(root.path(), &[(a2.clone(), &recs[..2])], &[a2, b]);
    let expected: Vec<_> = recs[..2]
        .iter()
        .map(|r| ("p-0000".to_owned(), 2, r.clone()))
        .chain(
            recs[..1]
                .iter()
                .map(|r| ("p-0001".to_owned(), 2, r.clone())),
        )
        .collect();
    assert_eq!(rows_of(&files.requests), expected);
}

#[test]
fn rewriting_a_partition_replaces_it() {
    let root = tempfile::tempdir().unwrap();
    let recs = records();
    let model = "meta-llama/Llama-3.2-1B";
    let first = vec![(summarize(meta(0), &recs, &[]), recs.as_slice())];
    write_partition(
        root.path(),
        "sw-20260101-abc",
        model,
        2,
        &first,
        &[],
        &metadata(),
    )
    .unwrap();
    let second = vec![(summarize(meta(5), &recs[..1], &[]), &recs[..1])];
    let files = write_partition(
        root.path(),
        "sw-20260101-abc",
        model,
        2,
        &second,
        &[],
        &metadata(),
    )
    .unwrap();
    assert_eq!(read_requests(&files.requests).unwrap().len(), 1);
    let summaries = read_point_summaries(&files.points).unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].meta.point_index, 5);
    assert_eq!(files_in(&partition_dir(root.path(), model, 2)).len(), 3);
}

#[test]
fn points_of_another_partition_are_rejected() {
    let root = tempfile::tempdir().unwrap();
    let points = vec![(summarize(meta(0), &[], &[]), &[][..])];
    let err = write_partition(
        root.path(),
        "sw-20260101-abc",
        "other/model",
        2,
        &points,
        &[],
        &metadata(),
    )
    .unwrap_err();
    assert!(matches!(err, ResultsError::BadResults { .. }), "{err}");
    let err = write_partition(
        root.path(),
        "../escape",
        "meta-llama/Llama-3.2-1B",
        2,
        &points,
        &[],
        &metadata(),
    )
    .unwrap_err();
    assert!(matches!(err, ResultsError::BadResults { .. }), "{err}");
    assert!(fs::read_dir(root.path()).unwrap().next().is_none());
}

#[test]
fn finds_points_files_recursively_and_by_sweep() {
    let root = tempfile::tempdir().unwrap();
    let recs = records();
    let mut other = meta(0);
    other.sweep_id = "sw-2".into();
    other.gpus = 1;
    let a = write_partition(
        root.path(),
        "sw-20260101-abc",
        "meta-llama/Llama-3.2-1B",
        2,
        &[(summarize(meta(0), &recs, &[]), recs.as_slice())],
        &[],
        &metadata(),
    )
    .unwrap();
    let b = write_partition(
        root.path(),
        "sw-2",
        "meta-llama/Llama-3.2-1B",
        1,
        &[(summarize(other, &recs, &[]), recs.as_slice())],
        &[],
        &metadata(),
    )
    .unwrap();
    fs::write(a.points.with_extension("parquet.tmp-1"), b"partial").unwrap();

    let mut all = vec![a.points.clone(), b.points.clone()];
    all.sort();
    assert_eq!(find_result_files(root.path(), None).unwrap(), all);
    assert_eq!(
        find_result_files(root.path(), Some("sw-2")).unwrap(),
        vec![b.points]
    );
    assert_eq!(
        find_result_files(root.path(), Some("nope")).unwrap(),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        find_result_files(&root.path().join("missing"), None).unwrap(),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn results_are_never_world_accessible() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let (files, _, _) = one_point_partition(root.path());
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = files.points.parent().unwrap();
    // The umask may take more, never add: at most 0750 and 0640.
    for d in [dir, dir.parent().unwrap()] {
        assert_eq!(mode(d) & !DIR_MODE, 0, "{}: {:o}", d.display(), mode(d));
        assert_eq!(mode(d) & 0o700, 0o700);
    }
    for f in [&files.requests, &files.points, &files.metrics] {
        assert_eq!(mode(f) & !FILE_MODE, 0, "{}: {:o}", f.display(), mode(f));
        assert_eq!(mode(f) & 0o600, 0o600);
    }
}
