//! [`RoutingStore`] for the sqlite backend: one read per route, on the read
//! pool.

use rusqlite::params;

use super::{SqliteStore, collect, map_err};
use crate::StoreError;
use crate::routing::{RouteWindow, RoutingStore, WindowQuery, window_sql};

#[async_trait::async_trait]
impl RoutingStore for SqliteStore {
    async fn route_windows(&self, q: WindowQuery) -> Result<Vec<RouteWindow>, StoreError> {
        self.read(move |c| {
            let mut s = c.prepare_cached(&window_sql('?')).map_err(map_err)?;
            let mut windows = Vec::with_capacity(q.routes.len());
            for route in &q.routes {
                let rows = collect(
                    s.query_map(
                        params![route.name, q.sent_before(route), i64::from(q.last)],
                        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)),
                    )
                    .map_err(map_err)?,
                )?;
                windows.push(RouteWindow::fold(route, rows));
            }
            Ok(windows)
        })
        .await
    }
}
