//! sqlx errors as the library's typed errors: what a caller may retry
//! (connection lost, timeouts) apart from what it must fix (a missing
//! migration, wrong credentials, an unknown database).

use transport_core::{Error, ErrorKind, Operation};

/// The `backend` of errors from the SQL stores.
pub(crate) const BACKEND: &str = "sql";

/// `e`, raised by `operation` on `table`, as a library error.
pub(crate) fn db_error(e: sqlx::Error, operation: &'static str, table: &str) -> Error {
    // A certificate not trusted, expired or for another host: not retried.
    let handshake = match &e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => transport_core::tls::handshake_error(&e),
        _ => None,
    };
    let (kind, message) = match &e {
        _ if handshake.is_some() => {
            let tls = handshake.expect("matched");
            (tls.kind(), format!("database TLS: {}", tls.message()))
        }
        sqlx::Error::Tls(_) => (ErrorKind::Tls, format!("database TLS: {e}")),
        sqlx::Error::Configuration(_) => (
            ErrorKind::InvalidArgument,
            format!("invalid database configuration: {e}"),
        ),
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::PoolClosed => {
            (ErrorKind::ConnectionLost, format!("database connection lost: {e}"))
        }
        sqlx::Error::PoolTimedOut => (
            ErrorKind::Timeout,
            "no database connection within the pool's acquire timeout".to_owned(),
        ),
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default().into_owned();
            let text = db.message().to_owned();
            if missing_migration(&code, &text) {
                (
                    ErrorKind::NotFound,
                    format!(
                        "table {table} or one of its columns does not exist ({text}): run the migration first \
                         (`migrate()`, `transport outbox migrate`, or apply `migration_sql()` with your own tool)"
                    ),
                )
            } else {
                match code.as_str() {
                    // invalid_authorization_specification, invalid_password
                    "28000" | "28P01" => (
                        ErrorKind::Unauthorized,
                        format!("database refused the credentials: {text}"),
                    ),
                    // insufficient_privilege: a grant is missing
                    "42501" => (
                        ErrorKind::Forbidden,
                        format!(
                            "database refused the operation: {text} (grants the stores need: transport-sql/docs.md)"
                        ),
                    ),
                    // invalid_catalog_name: the database does not exist
                    "3D000" => (ErrorKind::NotFound, format!("database does not exist: {text}")),
                    // admin_shutdown, crash_shutdown, cannot_connect_now
                    "57P01" | "57P02" | "57P03" => {
                        (ErrorKind::ConnectionLost, format!("database shutting down: {text}"))
                    }
                    // serialization_failure, deadlock_detected, lock_not_available;
                    // SQLite: SQLITE_BUSY (5), SQLITE_LOCKED (6)
                    "40001" | "40P01" | "55P03" | "5" | "6" | "517" => {
                        (ErrorKind::Timeout, format!("database busy, try again: {text}"))
                    }
                    // statement_timeout / query_canceled
                    "57014" => (ErrorKind::Timeout, format!("database statement timed out: {text}")),
                    _ => (ErrorKind::Backend, format!("database error {code}: {text}")),
                }
            }
        }
        _ => (ErrorKind::Backend, format!("database error: {e}")),
    };
    let operation_kind = if operation == "enqueue" {
        Operation::Enqueue
    } else {
        Operation::Store
    };
    Error::new(kind, format!("{operation} on {table}: {message}"))
        .with_backend(BACKEND)
        .with_operation(operation_kind)
        .with_source(e)
}

/// An insert into the outbox failed: a duplicate id is the caller's mistake
/// (not retryable), anything else is the database's.
pub(crate) fn enqueue_error(e: sqlx::Error, table: &str, id: &str) -> Error {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return Error::new(
                ErrorKind::InvalidArgument,
                format!("message id {id} is already in the outbox"),
            )
            .with_backend(BACKEND)
            .with_operation(Operation::Enqueue);
        }
    }
    db_error(e, "enqueue", table)
}

/// PostgreSQL's undefined_table and undefined_column, SQLite's "no such
/// table" and "no such column".
fn missing_migration(code: &str, message: &str) -> bool {
    code == "42P01" || code == "42703" || message.starts_with("no such table") || message.starts_with("no such column")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_errors_are_retryable_and_configuration_is_not() {
        let e = db_error(sqlx::Error::PoolTimedOut, "claim", "t");
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.is_retryable());
        let e = db_error(sqlx::Error::Configuration("bad".into()), "connect", "t");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(!e.is_retryable());
        assert!(missing_migration("42P01", "relation \"x\" does not exist"));
        assert!(missing_migration("1", "no such table: x"));
        assert!(missing_migration("1", "no such column: lease_until"));
        assert!(!missing_migration("23505", "duplicate key"));
    }
}
