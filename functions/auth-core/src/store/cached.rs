//! Every statement runs prepared once per connection and kept in the pool's statement cache.
//! tokio-postgres prepares an unnamed statement before each run of a plain string: two round
//! trips, and PostgreSQL parses and plans the text every time. Kept, a statement costs one round
//! trip from its second run on; a login runs about nine of them.
//!
//! The cache lives as long as the connection. Statements name their columns, so a migration that
//! adds a column leaves them valid; PostgreSQL re-plans them after any change to their tables.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

pub async fn execute(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = db.prepare_cached(sql).await?;
    db.execute(&statement, params).await
}

pub async fn query(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = db.prepare_cached(sql).await?;
    db.query(&statement, params).await
}

pub async fn query_one(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, tokio_postgres::Error> {
    let statement = db.prepare_cached(sql).await?;
    db.query_one(&statement, params).await
}

pub async fn query_opt(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    let statement = db.prepare_cached(sql).await?;
    db.query_opt(&statement, params).await
}
