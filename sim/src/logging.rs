//! Log lines in vLLM 0.32's two formats (see `fixtures/vllm-0.32-cpu/serve.log`):
//!
//! - vLLM's own loggers, on stdout:
//!   `(APIServer pid=2302) INFO 11-27 21:06:26 [entry.py:140] Starting vLLM server on http://…`
//!   (`(%(process_name)s pid=%(pid)d) %(levelname)s %(asctime)s [%(file)s:%(line)d] %(message)s`,
//!   date format `%m-%d %H:%M:%S`; a message's line breaks repeat the prefix);
//! - uvicorn's, target [`UVICORN`]: `INFO:     Application startup complete.` on stderr, and
//!   the access log, target [`UVICORN_ACCESS`]:
//!   `INFO:     127.0.0.1:45536 - "GET /health HTTP/1.1" 200 OK` on stdout.
//!
//! Events name the vLLM source location they stand for with a `src` field
//! (`src = "entry.py:140"`) and the process with `proc` (default `APIServer`); events without
//! `src` show their Rust file and line. Times are UTC (vLLM prints local time).

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Target of uvicorn's server lines ("Started server process", "Application startup complete.").
pub const UVICORN: &str = "uvicorn";
/// Target of uvicorn's access log lines.
pub const UVICORN_ACCESS: &str = "uvicorn.access";

/// The event formatter; `pid` is shown in the `(APIServer pid=N)` prefix.
#[derive(Debug, Clone, Copy)]
pub struct VllmFormat {
    pub pid: u32,
}

impl VllmFormat {
    pub fn new() -> Self {
        Self {
            pid: std::process::id(),
        }
    }
}

impl Default for VllmFormat {
    fn default() -> Self {
        Self::new()
    }
}

/// Python's `levelname` of a tracing level.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// uvicorn's `%(levelprefix)s %(message)s`: `INFO:     message`.
pub fn uvicorn_line(level: &str, message: &str) -> String {
    let pad = 8usize.saturating_sub(level.len());
    format!("{level}:{} {message}", " ".repeat(pad))
}

/// vLLM's line for `message`; each line break of the message repeats the prefix (vLLM's
/// `NewLineFormatter`).
pub fn vllm_line(
    process: &str,
    pid: u32,
    level: &str,
    time: &str,
    fileinfo: &str,
    message: &str,
) -> String {
    let prefix = format!("({process} pid={pid}) {level} {time} [{fileinfo}] ");
    let mut out = String::with_capacity(prefix.len() + message.len());
    out.push_str(&prefix);
    out.push_str(&message.replace('\n', &format!("\r\n{prefix}")));
    out
}

/// `%m-%d %H:%M:%S` of a Unix time, in UTC.
pub fn format_time(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (_, month, day) = civil_from_days(days as i64);
    format!(
        "{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The fields of one event: the message, `src`, `proc` and any others (`key=value`).
#[derive(Default)]
struct Fields {
    message: String,
    src: Option<String>,
    process: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "src" => self.src = Some(value.to_owned()),
            "proc" => self.process = Some(value.to_owned()),
            "message" => self.message = value.to_owned(),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "src" => self.src = Some(format!("{value:?}").trim_matches('"').to_owned()),
            "proc" => self.process = Some(format!("{value:?}").trim_matches('"').to_owned()),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

impl<S, N> FormatEvent<S, N> for VllmFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = format!("{}{}", fields.message, fields.rest);
        let level = level_name(*meta.level());
        let line = if meta.target() == UVICORN || meta.target() == UVICORN_ACCESS {
            uvicorn_line(level, &message)
        } else {
            let fileinfo = fields.src.unwrap_or_else(|| {
                let file = meta.file().unwrap_or("vllm-sim");
                let base = file.rsplit('/').next().unwrap_or(file);
                format!("{base}:{}", meta.line().unwrap_or(0))
            });
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            vllm_line(
                fields.process.as_deref().unwrap_or("APIServer"),
                self.pid,
                level,
                &format_time(now),
                &fileinfo,
                &message,
            )
        };
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of `fixtures/vllm-0.32-cpu/serve.log`, rebuilt from their parts.
    #[test]
    fn lines_match_the_capture() {
        let log = include_str!("../../tests/fixtures/vllm-0.32-cpu/serve.log");
        let starting = vllm_line(
            "APIServer",
            2302,
            "INFO",
            "11-27 21:06:26",
            "entry.py:140",
            "Starting vLLM server on http://127.0.0.1:18100",
        );
        assert!(log.lines().any(|l| l == starting), "{starting}");
        let ready = uvicorn_line("INFO", "Application startup complete.");
        assert_eq!(ready, "INFO:     Application startup complete.");
        assert!(log.lines().any(|l| l == ready));
        let access = uvicorn_line("INFO", "127.0.0.1:45536 - \"GET /health HTTP/1.1\" 200 OK");
        assert!(log.lines().any(|l| l == access));
        let warning = vllm_line(
            "APIServer",
            2302,
            "WARNING",
            "11-27 21:08:23",
            "utils.py:648",
            "[shutdown] Process manager: force killing remaining processes count=1",
        );
        assert!(log.lines().any(|l| l == warning), "{warning}");
        assert_eq!(uvicorn_line("WARNING", "x"), "WARNING:  x");
    }

    #[test]
    fn multi_line_messages_repeat_the_prefix() {
        assert_eq!(
            vllm_line("APIServer", 1, "INFO", "01-02 03:04:05", "a.py:1", "x\ny"),
            "(APIServer pid=1) INFO 01-02 03:04:05 [a.py:1] x\r\n(APIServer pid=1) INFO 01-02 03:04:05 [a.py:1] y"
        );
    }

    #[test]
    fn time_is_month_day_and_clock() {
        // 2026-11-27 21:06:26 UTC.
        assert_eq!(format_time(1_795_813_586), "11-27 21:06:26");
        assert_eq!(format_time(0), "01-01 00:00:00");
        // 2024-02-29 (leap day) 12:00:00 UTC.
        assert_eq!(format_time(1_709_208_000), "02-29 12:00:00");
    }
}
