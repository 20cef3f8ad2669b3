//! The engine's failures, typed so the server can map each to a Kinto status.

use crate::object::StoredObject;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The storage refused a read or write. In the writer this is fatal: see `Unavailable`.
    #[error("storage error: {0}")]
    Storage(String),
    /// A stored value failed its checksum, its hash chain or its decoding.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Writes are refused after a failed write or flush (fail-stop); restart to replay.
    #[error("the engine refuses writes after a storage failure: {0}")]
    Unavailable(String),
    /// A command's expectation about the current object did not hold.
    #[error("precondition failed")]
    PreconditionFailed { current: Option<Box<StoredObject>> },
    /// A client-chosen timestamp is already used by another object of the same list.
    #[error("timestamp {0} is already taken in this list")]
    TimestampTaken(u64),
    /// The parent object (bucket, collection) of a write does not exist.
    #[error("parent {0} does not exist")]
    UnknownParent(String),
    /// The object is larger than the configured limit.
    #[error("object of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// A command is malformed (empty id, data that is not an object...).
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    /// The writer thread is gone (engine closed).
    #[error("the engine is closed")]
    Closed,
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl From<sled::Error> for EngineError {
    fn from(err: sled::Error) -> Self {
        EngineError::Storage(err.to_string())
    }
}
