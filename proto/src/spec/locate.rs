//! TOML locations for error messages: byte offsets to line:column, defaulted fields to
//! their section header, and the key a TOML parse error points at.

use std::ops::Range;

use crate::error::SpecError;

/// Line and column (both 1-based, the column in characters) of byte `offset` in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
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
    let mut message = e.message().trim().to_string();
    let mut field = path_at(text, &span)
        .or_else(|| header_at(text, &span))
        .or_else(|| key_at(text, &span))
        .or_else(|| key_of_value(text, &span))
        .unwrap_or_default();
    // A missing field is reported with the span of the table that lacks it (the whole
    // document for a top-level field): name the field itself.
    if let Some(missing) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        let whole_document = span.start == 0 && span.end >= text.trim_end().len();
        field = if whole_document || field.is_empty() {
            missing.to_string()
        } else {
            format!("{field}.{missing}")
        };
    }
    if message == "duplicate key" && !field.is_empty() {
        message = format!("duplicate key: `{field}` is defined twice");
    }
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
    if !is_key {
        return None;
    }
    let line_start = text.get(..span.start)?.rfind('\n').map_or(0, |p| p + 1);
    Some(match section_above(text, line_start) {
        Some(section) => format!("{section}.{s}"),
        None => s.to_string(),
    })
}

/// The `[section]` whose body holds the line starting at `line_start` (not `[[…]]`).
fn section_above(text: &str, line_start: usize) -> Option<&str> {
    text.get(..line_start)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .and_then(|l| {
            let header = l.split('#').next()?.trim();
            let name = header.strip_prefix('[')?.strip_suffix(']')?.trim();
            // `[[array.of.tables]]` headers are not named here.
            (!name.starts_with('[')).then_some(name)
        })
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
    let section = section_above(text, line_start);
    Some(match section {
        Some(section) => format!("{section}.{lhs}"),
        None => lhs.to_string(),
    })
}

/// The full field path (`matrix.batch_sizes[0]`, `matrix.workloads[1].input`) of the
/// deepest key or value of the document that covers `span`'s start, read from a
/// best-effort parse of `text` (it also works when the document has syntax errors before
/// or after the span).
pub(super) fn path_at(text: &str, span: &Range<usize>) -> Option<String> {
    let (doc, _errors) = toml::de::DeTable::parse_recoverable(text);
    find_in_table(doc.get_ref(), span.start, "")
}

fn covers(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

fn find_in_table(table: &toml::de::DeTable<'_>, offset: usize, prefix: &str) -> Option<String> {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if let Some(deeper) = find_in_value(value, offset, &path) {
            return Some(deeper);
        }
        if covers(&key.span(), offset) {
            return Some(path);
        }
    }
    None
}

fn find_in_value(
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    offset: usize,
    path: &str,
) -> Option<String> {
    match value.get_ref() {
        toml::de::DeValue::Table(t) => {
            if let Some(deeper) = find_in_table(t, offset, path) {
                return Some(deeper);
            }
        }
        toml::de::DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                if let Some(deeper) = find_in_value(item, offset, &format!("{path}[{i}]")) {
                    return Some(deeper);
                }
            }
        }
        _ => {}
    }
    // Header tables have no useful span of their own: only leaves and inline values count.
    let is_header_table =
        matches!(value.get_ref(), toml::de::DeValue::Table(_)) && text_is_not_inline(value);
    (!is_header_table && covers(&value.span(), offset)).then(|| path.to_string())
}

/// Whether a table value came from a `[header]` rather than an inline `{ … }` (whose span
/// covers its braces).
fn text_is_not_inline(value: &toml::Spanned<toml::de::DeValue<'_>>) -> bool {
    value.span().is_empty()
}

/// The table named by the `[header]` or `[[header]]` at `span`, when the span lies on a
/// header line (duplicate tables are reported there).
fn header_at(text: &str, span: &Range<usize>) -> Option<String> {
    let start = span.start.min(text.len());
    let line_start = text.get(..start)?.rfind('\n').map_or(0, |p| p + 1);
    let line_end = text
        .get(start..)?
        .find('\n')
        .map_or(text.len(), |p| start + p);
    let line = text.get(line_start..line_end)?.split('#').next()?.trim();
    let name = line.strip_prefix('[')?.strip_suffix(']')?;
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name)
        .trim();
    (!name.is_empty()).then(|| name.to_string())
}
