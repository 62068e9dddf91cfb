//! Errors of the store.

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named row does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A unique value (sandbox id, envd token, key) is already taken, or a
    /// prefix names more than one key.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller passed a value the store cannot accept (bad cursor token,
    /// bad URL, number out of range).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A stored value could not be decoded (a hand-edited or foreign database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database driver failed (connection, SQL, constraint).
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    /// Applying the embedded migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A file-system step of opening a SQLite database failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        // Unique violations are the caller's doing (duplicate id or token),
        // so they get their own variant on both engines.
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return Error::Conflict(db.message().to_string());
            }
        }
        Error::Database(e)
    }
}

/// Result with the store's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
