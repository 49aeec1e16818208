//! Statements of fixed text run as prepared statements, cached per
//! connection.
//!
//! `tokio_postgres` runs a statement given as text in two round trips: it
//! prepares it (PostgreSQL parses and plans it, and describes its types), then
//! binds and runs it. On the paths every send takes (accept, claim, finish,
//! receipts) a batch runs a dozen statements while it holds its accounts'
//! row locks, so those round trips and parses lengthen every lock hold. The
//! methods here prepare a statement once per pooled connection
//! (`deadpool_postgres`'s statement cache) and from then on run it in one
//! round trip with no parse.
//!
//! The text must be `'static`: the cache keeps every distinct text for the
//! connection's life, so text built per call (with values or a varying list
//! of columns in it) would grow it without bound. Such statements use the
//! plain `query`/`execute`.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// [`GenericClient`] methods that go through the statement cache.
#[async_trait::async_trait]
pub(super) trait Prepared: GenericClient {
    /// Like `query`.
    async fn query_cached(&self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query(&statement, params).await
    }

    /// Like `query_one`.
    async fn query_one_cached(&self, sql: &'static str, params: Params<'_>) -> Result<Row, Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_one(&statement, params).await
    }

    /// Like `query_opt`.
    async fn query_opt_cached(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_opt(&statement, params).await
    }

    /// Like `execute`.
    async fn execute_cached(&self, sql: &'static str, params: Params<'_>) -> Result<u64, Error> {
        let statement = self.prepare_cached(sql).await?;
        self.execute(&statement, params).await
    }
}

impl<C: GenericClient> Prepared for C {}
