//! What a writer expects of a stream before its append, checked atomically with the write.

use std::fmt;

/// The expectation an append is made under. The check and the write are one atomic operation
/// in every backend, so two writers that expect the same version can never both succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No check: append at the end, whatever the version.
    Any,
    /// The stream must not exist yet (the append creates it).
    NoStream,
    /// The stream must already exist.
    Exists,
    /// The stream's version (last sequence number) must be exactly this; 0 means "no stream".
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` (0 = does not exist) meets this expectation.
    pub fn is_met_by(self, actual: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::Exists => actual > 0,
            Self::Exact(n) => actual == n,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("noStream"),
            Self::Exists => f.write_str("exists"),
            Self::Exact(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ExpectedVersion::*;

    #[test]
    fn expectations() {
        assert!(Any.is_met_by(0) && Any.is_met_by(7));
        assert!(NoStream.is_met_by(0) && !NoStream.is_met_by(1));
        assert!(!Exists.is_met_by(0) && Exists.is_met_by(1));
        assert!(Exact(3).is_met_by(3) && !Exact(3).is_met_by(2) && !Exact(3).is_met_by(4));
        assert!(Exact(0).is_met_by(0));
    }
}
