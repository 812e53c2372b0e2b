//! What Diesel offers on `SqliteConnection` beyond its connection traits, on the routed
//! connection: `immediate_transaction` and `exclusive_transaction`.

use diesel::result::Error;
use diesel::sqlite::SqliteConnection;

use super::RoutedConnection;

impl RoutedConnection<SqliteConnection> {
    /// Diesel's [`SqliteConnection::immediate_transaction`]: a transaction that takes the
    /// write lock at once (`BEGIN IMMEDIATE`), on the primary.
    pub fn immediate_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<Error>,
    {
        self.transaction_sql(f, "BEGIN IMMEDIATE")
    }

    /// Diesel's [`SqliteConnection::exclusive_transaction`]: `BEGIN EXCLUSIVE`, on the
    /// primary.
    pub fn exclusive_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<Error>,
    {
        self.transaction_sql(f, "BEGIN EXCLUSIVE")
    }
}
