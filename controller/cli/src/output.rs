//! How controllerctl prints point summaries: the `--format` choice; the text itself is
//! [`fleetbench_results::text`].

use fleetbench_proto::pb;
use fleetbench_results::text::{to_csv, to_json, to_table};

/// Output format of `results` and `local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

pub fn render(points: &[pb::PointSummary], format: Format) -> String {
    match format {
        Format::Table => to_table(points),
        Format::Csv => to_csv(points),
        Format::Json => to_json(points),
    }
}

/// Writes `text` to standard output. A reader that went away (`controllerctl … | head`)
/// is not an error: the rest of the output is dropped and the command ends as it would
/// have, with its own exit code; any other write error is returned.
pub fn out(text: &str) -> Result<(), crate::CliError> {
    write_to(&mut std::io::stdout().lock(), text)
}

/// [`out`] with a newline after `text`.
pub fn outln(text: &str) -> Result<(), crate::CliError> {
    let mut stdout = std::io::stdout().lock();
    write_to(&mut stdout, text)?;
    write_to(&mut stdout, "\n")
}

fn write_to(w: &mut impl std::io::Write, text: &str) -> Result<(), crate::CliError> {
    match w.write_all(text.as_bytes()).and_then(|()| w.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(crate::CliError::io("standard output", e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Closed;
    impl std::io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_not_an_error_but_other_write_errors_are() {
        assert!(write_to(&mut Closed, "x").is_ok());
        assert!(write_to(&mut Full, "x").is_err());
        let mut buf = Vec::new();
        write_to(&mut buf, "abc").unwrap();
        assert_eq!(buf, b"abc");
    }
}
