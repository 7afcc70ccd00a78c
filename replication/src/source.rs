//! What every source reader shares with the core, whichever database it reads: when its
//! batches close ([`BatchLimits`], decided by the core) and how it ends without error
//! ([`SourceExit`]).

/// When a batch closes.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Close after this many rows (at the next transaction boundary).
    pub max_rows: usize,
    /// Close after about this many bytes of decoded data.
    pub max_bytes: usize,
}

/// How the source ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceExit {
    /// Cancelled (Ctrl-C, SIGTERM).
    Cancelled,
    /// `until` reached: every change committed before it is durable.
    CaughtUp,
}
