//! Unit tests of the spool: the frame checksum, file names, torn last frames, and the
//! attempts kept or deleted at restart.

use super::*;

fn batch(point: &str, attempt: u32, seq: u64) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(Msg::RecordBatch(pb::RecordBatch {
            point_id: point.into(),
            attempt,
            seq,
            records: vec![pb::RequestRecord::default(); 3],
            ..Default::default()
        })),
    }
}

fn finished(point: &str, attempt: u32) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(Msg::PointFinished(pb::PointFinished {
            point_id: point.into(),
            attempt,
            batches: 2,
            ok: true,
            ..Default::default()
        })),
    }
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn file_names_round_trip_any_point_id() {
    for id in ["p1", "sweep/with.dots and spaces", "ü-0003", ""] {
        let key = (id.to_string(), 7);
        assert_eq!(parse_file_name(&file_name(&key)), Some(key));
    }
    assert_eq!(parse_file_name(".lock"), None);
    assert_eq!(parse_file_name("zz.1.spool"), None);
}

#[test]
fn a_torn_last_frame_is_dropped_at_every_cut() {
    let mut bytes = encode_frame(&batch("p", 1, 0));
    let first = bytes.len();
    bytes.extend(encode_frame(&batch("p", 1, 1)));
    for cut in first..bytes.len() {
        let (msgs, valid) = decode_frames(&bytes[..cut]);
        assert_eq!(msgs.len(), 1, "cut at {cut}");
        assert_eq!(valid, first);
    }
    assert_eq!(decode_frames(&bytes).0.len(), 2);
    // A flipped payload bit fails the CRC: that frame and everything after it goes.
    let mut corrupt = bytes.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x01;
    assert_eq!(decode_frames(&corrupt), (vec![batch("p", 1, 0)], first));
}

#[test]
fn restart_keeps_finished_attempts_and_deletes_interrupted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let done = ("done".to_string(), 1);
    let cut = ("cut".to_string(), 2);
    let torn_finish = ("torn".to_string(), 1);
    {
        let (mut s, rec) = Spool::open(dir.path()).unwrap();
        assert!(rec.resend.is_empty() && rec.discarded.is_empty());
        s.append(&done, &encode_frame(&batch("done", 1, 0)), false)
            .unwrap();
        s.append(&done, &encode_frame(&batch("done", 1, 1)), false)
            .unwrap();
        s.append(&done, &encode_frame(&finished("done", 1)), true)
            .unwrap();
        s.append(&cut, &encode_frame(&batch("cut", 2, 0)), false)
            .unwrap();
        // Killed mid-write of the point-finished frame: only half of it made it.
        s.append(&torn_finish, &encode_frame(&batch("torn", 1, 0)), false)
            .unwrap();
        let f = encode_frame(&finished("torn", 1));
        s.append(&torn_finish, &f[..f.len() / 2], false).unwrap();
        // A second agent on the same directory is refused while this one runs.
        let err = Spool::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use"), "{err}");
    }
    let (s, rec) = Spool::open(dir.path()).unwrap();
    assert_eq!(
        rec.resend.iter().map(|r| &r.key).collect::<Vec<_>>(),
        vec![&done]
    );
    assert_eq!(rec.resend[0].frames, 3);
    assert_eq!(rec.discarded, vec![cut.clone(), torn_finish.clone()]);
    let msgs = s.read(&done, rec.resend[0].len).unwrap();
    assert_eq!(
        msgs,
        vec![
            batch("done", 1, 0),
            batch("done", 1, 1),
            finished("done", 1)
        ]
    );
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(SUFFIX))
        .collect();
    files.sort();
    assert_eq!(files, vec![file_name(&done)]);
}

#[test]
fn the_spool_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool").join("a");
    let (mut spool, _) = Spool::open(&dir).unwrap();
    let key = ("s/p000".to_string(), 1);
    spool
        .append(&key, &encode_frame(&batch("s/p000", 1, 0)), false)
        .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&tmp.path().join("spool")), 0o700);
    assert_eq!(mode(&dir.join(".lock")), 0o600);
    assert_eq!(mode(&spool.path(&key)), 0o600);
}
