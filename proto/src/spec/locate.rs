//! TOML locations for error messages: byte offsets to line:column, defaulted fields to
//! their section header, and the key a TOML parse error points at.

use std::ops::Range;

use crate::error::SpecError;

/// Line and column (both 1-based, the column in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let column = text
        .get(line_start..offset)
        .map_or(1, |s| s.chars().count() + 1);
    (line, column)
}

pub(super) fn located(
    text: &str,
    file: &str,
    span: Range<usize>,
    field: &str,
    message: String,
) -> SpecError {
    // Defaulted fields carry the empty span 0..0: locate them at their section instead.
    let (line, column) = if span == (0..0) {
        section_line(text, field).unwrap_or((0, 0))
    } else {
        line_col(text, span.start)
    };
    SpecError {
        file: file.to_string(),
        line,
        column,
        field: field.to_string(),
        message,
    }
}

/// Line of the `[section]` header a dotted field lives in, for values that were defaulted.
fn section_line(text: &str, field: &str) -> Option<(usize, usize)> {
    let section = field.split('.').next()?;
    let header = format!("[{section}]");
    text.lines()
        .position(|l| l.trim() == header)
        .map(|i| (i + 1, 1))
}

pub(super) fn toml_error(text: &str, file: &str, e: &toml::de::Error) -> SpecError {
    let span = e.span().unwrap_or(0..0);
    let (line, column) = if e.span().is_some() {
        line_col(text, span.start)
    } else {
        (0, 0)
    };
    // For unknown fields the span covers the offending key; name it.
    // For a bad value it covers the value; name its key (`section.key`).
    let message = e.message().trim().to_string();
    let field = key_at(text, &span)
        .or_else(|| key_of_value(text, &span))
        .unwrap_or_default();
    SpecError {
        file: file.to_string(),
        line,
        column,
        field,
        message,
    }
}

/// The bare key written at `span`, when the span covers one (`foo` in `foo = 1`).
fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let s = text.get(span.clone())?.trim();
    let rest = text.get(span.end..)?.trim_start();
    let is_key = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && rest.starts_with('=');
    is_key.then(|| s.to_string())
}

/// The dotted key (`policy.on_engine_crash`) of the value that starts at `span`, when it is
/// the whole right-hand side of a `key = value` line (not inside an inline table or array).
fn key_of_value(text: &str, span: &Range<usize>) -> Option<String> {
    let before = text.get(..span.start)?;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let lhs = before
        .get(line_start..)?
        .trim_end()
        .strip_suffix('=')?
        .trim();
    let is_key = !lhs.is_empty()
        && lhs
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !is_key {
        return None;
    }
    let section = before
        .get(..line_start)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .and_then(|l| {
            let header = l.split('#').next()?.trim();
            let name = header.strip_prefix('[')?.strip_suffix(']')?.trim();
            // `[[array.of.tables]]` headers are not named here.
            (!name.starts_with('[')).then_some(name)
        });
    Some(match section {
        Some(section) => format!("{section}.{lhs}"),
        None => lhs.to_string(),
    })
}
