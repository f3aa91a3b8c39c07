use std::fmt;

/// Errors of the shared protocol crate.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The sweep file is malformed or holds a value that cannot work.
    #[error("{0}")]
    Spec(#[from] SpecError),
    /// A wire message lacks a field the receiver needs.
    #[error("message {message} lacks field `{field}`")]
    MissingField {
        message: &'static str,
        field: &'static str,
    },
    /// A wire message holds a value the receiver cannot use.
    #[error("message {message}: field `{field}`: {reason}")]
    InvalidField {
        message: &'static str,
        field: &'static str,
        reason: String,
    },
}

/// A problem in a sweep file, located by line and column and naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    /// 1-based line; 0 when the problem has no location (e.g. empty file).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted path of the field, e.g. `matrix.batch_sizes[2]`; empty when unknown.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": field `{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for SpecError {}
