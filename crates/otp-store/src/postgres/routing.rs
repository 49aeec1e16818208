//! [`RoutingStore`] for the postgres backend: one query per route on one
//! pooled connection.

use super::{PgStore, pg_err};
use crate::StoreError;
use crate::routing::{RouteWindow, RoutingStore, WindowQuery, window_sql};

#[async_trait::async_trait]
impl RoutingStore for PgStore {
    async fn route_windows(&self, q: WindowQuery) -> Result<Vec<RouteWindow>, StoreError> {
        let c = self.client().await?;
        let s = c.prepare_cached(&window_sql('$')).await.map_err(pg_err)?;
        let mut windows = Vec::with_capacity(q.routes.len());
        for route in &q.routes {
            let rows = c
                .query(
                    &s,
                    &[&route.name, &q.sent_before(route), &i64::from(q.last)],
                )
                .await
                .map_err(pg_err)?;
            let rows = rows
                .iter()
                .map(|r| Ok((r.try_get::<_, i32>(0)?.into(), r.try_get(1)?)))
                .collect::<Result<Vec<(i64, Option<i64>)>, tokio_postgres::Error>>()
                .map_err(pg_err)?;
            windows.push(RouteWindow::fold(route, rows));
        }
        Ok(windows)
    }
}
