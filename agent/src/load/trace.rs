//! Trace files for `[load] mode = "trace"`: one request per row, with its arrival time and
//! its input and output lengths, replayed on the point's absolute timeline.
//!
//! Formats, told apart by content:
//! - CSV with a header. The Azure LLM inference trace
//!   (`TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps like
//!   `2023-11-16 18:15:46.6805900`), or generic columns `arrival_s` (seconds, also
//!   `timestamp_s` / `offset_s`), `input_tokens`, `output_tokens`. Column names are
//!   matched without case; other columns are ignored.
//! - JSONL: `{"arrival_s": 0.25, "input_tokens": 512, "output_tokens": 128}` per line.
//!
//! Arrivals are made relative to the earliest one and the rows ordered by arrival. A row
//! whose lengths do not fit the engine's `max_model_len` (or are 0) is skipped and
//! counted, not truncated. A malformed row is an error naming its line.

use std::time::Duration;

use crate::error::AgentError;
use crate::load::lengths::Lengths;

/// One request of a trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceRequest {
    /// Seconds after the trace's first arrival (before the time scale).
    pub arrival_s: f64,
    pub lengths: Lengths,
}

/// A parsed trace: its requests in arrival order and the rows skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub requests: Vec<TraceRequest>,
    /// Rows whose lengths were 0 or did not fit `max_model_len`.
    pub skipped: usize,
}

impl Trace {
    /// Parses `text` (named `name` in errors), keeping the rows that fit `max_model_len`.
    pub fn parse(name: &str, text: &str, max_model_len: u32) -> Result<Trace, AgentError> {
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        let rows = if first.starts_with('{') {
            parse_jsonl(name, text)?
        } else {
            parse_csv(name, text)?
        };
        if rows.is_empty() {
            return Err(bad(name, 0, "holds no requests".into()));
        }
        let start = rows
            .iter()
            .map(|r| r.arrival_s)
            .fold(f64::INFINITY, f64::min);
        let mut skipped = 0;
        let mut requests: Vec<TraceRequest> = rows
            .into_iter()
            .filter(|r| {
                let l = r.lengths;
                let fits = l.input > 0
                    && l.output > 0
                    && u64::from(l.input) + u64::from(l.output) <= u64::from(max_model_len);
                skipped += usize::from(!fits);
                fits
            })
            .map(|r| TraceRequest {
                arrival_s: r.arrival_s - start,
                lengths: r.lengths,
            })
            .collect();
        requests.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
        Ok(Trace { requests, skipped })
    }

    /// The replay: each kept request's send offset (arrival / `time_scale`) and lengths,
    /// cut at `max_requests` requests and at `window` (offsets at or after it are not
    /// sent).
    pub fn replay(
        &self,
        time_scale: f64,
        max_requests: Option<u32>,
        window: Option<Duration>,
    ) -> (Vec<Duration>, Vec<Lengths>) {
        let scale = if time_scale > 0.0 && time_scale.is_finite() {
            time_scale
        } else {
            1.0
        };
        let limit = max_requests.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        self.requests
            .iter()
            .map(|r| (Duration::from_secs_f64(r.arrival_s / scale), r.lengths))
            .take_while(|(offset, _)| window.is_none_or(|w| *offset < w))
            .take(limit)
            .unzip()
    }
}

fn bad(name: &str, line: usize, message: String) -> AgentError {
    if line == 0 {
        AgentError::Prompt(format!("trace {name}: {message}"))
    } else {
        AgentError::Prompt(format!("trace {name} line {line}: {message}"))
    }
}

fn parse_jsonl(name: &str, text: &str) -> Result<Vec<TraceRequest>, AgentError> {
    #[derive(serde::Deserialize)]
    struct Row {
        #[serde(alias = "timestamp_s", alias = "offset_s", alias = "timestamp")]
        arrival_s: f64,
        input_tokens: u32,
        output_tokens: u32,
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(line).map_err(|e| bad(name, i + 1, e.to_string()))?;
        if !row.arrival_s.is_finite() {
            return Err(bad(name, i + 1, "arrival_s is not a number".into()));
        }
        out.push(TraceRequest {
            arrival_s: row.arrival_s,
            lengths: Lengths {
                input: row.input_tokens,
                output: row.output_tokens,
            },
        });
    }
    Ok(out)
}

fn parse_csv(name: &str, text: &str) -> Result<Vec<TraceRequest>, AgentError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let columns: Vec<String> = header
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    let find = |names: &[&str]| columns.iter().position(|c| names.contains(&c.as_str()));
    let arrival = find(&["arrival_s", "timestamp_s", "offset_s"]);
    let azure_time = find(&["timestamp"]);
    let input = find(&["input_tokens", "contexttokens"]);
    let output = find(&["output_tokens", "generatedtokens"]);
    let (Some(input), Some(output)) = (input, output) else {
        return Err(bad(
            name,
            1,
            "needs the columns input_tokens and output_tokens (or the Azure trace's \
             ContextTokens and GeneratedTokens); neither a JSONL trace"
                .into(),
        ));
    };
    // Seconds in `arrival_s`; the Azure trace's TIMESTAMP is a date and time (or seconds).
    let azure = match (arrival, azure_time) {
        (Some(_), _) => false,
        (None, Some(_)) => true,
        (None, None) => {
            return Err(bad(
                name,
                1,
                "needs an arrival column: arrival_s (seconds) or TIMESTAMP".into(),
            ));
        }
    };
    let time = |v: &str| {
        let seconds = v.parse::<f64>().ok().filter(|t| t.is_finite());
        if azure {
            seconds.or_else(|| timestamp_seconds(v))
        } else {
            seconds
        }
    };
    let time_column = arrival.or(azure_time).unwrap_or(0);
    let mut out = Vec::new();
    for (i, line) in lines {
        let cells: Vec<&str> = line
            .split(',')
            .map(|c| c.trim().trim_matches('"'))
            .collect();
        let cell = |c: usize| cells.get(c).copied().unwrap_or("");
        let arrival_s = time(cell(time_column)).ok_or_else(|| {
            bad(
                name,
                i + 1,
                format!("arrival {:?} is not a time", cell(time_column)),
            )
        })?;
        let count = |c: usize, what: &str| {
            cell(c).parse::<u32>().map_err(|_| {
                bad(
                    name,
                    i + 1,
                    format!("{what} {:?} is not a token count", cell(c)),
                )
            })
        };
        out.push(TraceRequest {
            arrival_s,
            lengths: Lengths {
                input: count(input, "input")?,
                output: count(output, "output")?,
            },
        });
    }
    Ok(out)
}

/// Seconds since 1970-01-01 of `YYYY-MM-DD hh:mm:ss[.fraction]` (the Azure trace's
/// timestamps, in UTC), without a time-zone library.
fn timestamp_seconds(v: &str) -> Option<f64> {
    let (date, time) = v.trim().split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.trim_end_matches('Z').split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let s = t.next()?.parse::<f64>().ok()?;
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || h > 23
        || min > 59
        || !(0.0..61.0).contains(&s)
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3_600 + min * 60) as f64 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_azure_trace_format() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
                    2023-11-16 18:15:46.6805900,374,44\n\
                    2023-11-16 18:15:50.9951690,396,109\n\
                    2023-11-16 18:16:00.0000000,879,0\n\
                    2023-11-17 00:00:00.5,100000,10\n";
        let t = Trace::parse("azure.csv", text, 4096).unwrap();
        assert_eq!(t.skipped, 2, "a zero output and one too long");
        assert_eq!(t.requests.len(), 2);
        assert_eq!(t.requests[0].arrival_s, 0.0);
        assert!((t.requests[1].arrival_s - 4.314_579).abs() < 1e-6, "{t:?}");
        assert_eq!(
            t.requests[1].lengths,
            Lengths {
                input: 396,
                output: 109
            }
        );
        assert_eq!(timestamp_seconds("1970-01-02 00:00:01"), Some(86_401.0));
        assert_eq!(
            timestamp_seconds("2000-03-01 00:00:00"),
            Some(951_868_800.0)
        );
    }

    #[test]
    fn reads_generic_csv_and_jsonl_and_orders_by_arrival() {
        let csv = "id,arrival_s,input_tokens,output_tokens\na,2.5,10,5\nb,1.5,20,6\n";
        let t = Trace::parse("t.csv", csv, 100).unwrap();
        assert_eq!(
            t.requests
                .iter()
                .map(|r| (r.arrival_s, r.lengths.input))
                .collect::<Vec<_>>(),
            vec![(0.0, 20), (1.0, 10)]
        );
        let jsonl = "{\"arrival_s\": 0.5, \"input_tokens\": 8, \"output_tokens\": 2}\n\n\
                     {\"timestamp\": 0.75, \"input_tokens\": 9, \"output_tokens\": 3, \"x\": 1}\n";
        let t = Trace::parse("t.jsonl", jsonl, 100).unwrap();
        assert_eq!(t.requests.len(), 2);
        assert_eq!(t.requests[1].arrival_s, 0.25);
    }

    #[test]
    fn malformed_rows_name_their_line() {
        let e = Trace::parse(
            "t.csv",
            "arrival_s,input_tokens,output_tokens\n1,2,3\nx,2,3\n",
            100,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("trace t.csv line 3: arrival \"x\" is not a time"),
            "{e}"
        );
        let e = Trace::parse("t.csv", "when,in,out\n1,2,3\n", 100).unwrap_err();
        assert!(e.to_string().contains("line 1: needs the columns"), "{e}");
        let e = Trace::parse("t.jsonl", "{\"arrival_s\": 1}\n", 100).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn replay_scales_time_and_cuts_at_the_caps() {
        let text = "arrival_s,input_tokens,output_tokens\n0,1,1\n1,1,1\n2,1,1\n3,1,1\n";
        let t = Trace::parse("t.csv", text, 100).unwrap();
        let (offsets, _) = t.replay(2.0, None, None);
        assert_eq!(
            offsets,
            [0.0, 0.5, 1.0, 1.5].map(Duration::from_secs_f64).to_vec()
        );
        assert_eq!(t.replay(2.0, Some(2), None).0.len(), 2);
        assert_eq!(
            t.replay(1.0, None, Some(Duration::from_secs_f64(2.5)))
                .0
                .len(),
            3
        );
    }
}
