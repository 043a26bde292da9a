//! The shop's SQLite database: a small pool of read-only connections, and the queries the pages
//! make. Every query is a plain blocking function; the pages call it through
//! [`Platform::blocking`](super::platform::Platform::blocking), never on an async worker.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::data::{CATEGORIES, REGIONS};

/// Idle connections kept for reuse; more are opened under load and closed when returned to a
/// full pool (opening one is tens of microseconds; plucked from thin air, not a tuned figure).
const IDLE_CONNECTIONS: usize = 16;

/// Read-only connections to `shop.db`, cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    path: Arc<PathBuf>,
    idle: Arc<Mutex<Vec<Connection>>>,
}

/// A product's row, as `/product/{id}` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductRow {
    /// Id.
    pub id: u32,
    /// Name.
    pub name: String,
    /// Category name.
    pub category: &'static str,
    /// Price in cents.
    pub price_cents: i64,
    /// Units in stock.
    pub stock: i64,
    /// First year it sold.
    pub added_year: u32,
    /// Units sold over all years.
    pub units_sold: i64,
}

/// One year's sales summed per category and region: `units[category][region]`.
pub type YearSales = [[f64; REGIONS]; CATEGORIES.len()];

impl Db {
    /// A pool over the database at `path` (opened lazily).
    pub fn new(path: PathBuf) -> Self {
        Db {
            path: Arc::new(path),
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Runs `f` with a connection (blocking).
    fn with<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> rusqlite::Result<R> {
        let conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => Connection::open_with_flags(
                &*self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?,
        };
        let r = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(conn);
        }
        r
    }

    /// A product and its total sales; `None` when there is no such product.
    pub fn product(&self, id: u32) -> rusqlite::Result<Option<ProductRow>> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT p.id, p.name, p.category, p.price_cents, p.stock, p.added_year,
                        COALESCE((SELECT SUM(units) FROM sales s WHERE s.product_id = p.id), 0)
                 FROM product p WHERE p.id = ?1",
            )?
            .query_row([id], |r| {
                Ok(ProductRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    category: CATEGORIES
                        .get(r.get::<_, i64>(2)? as usize)
                        .copied()
                        .unwrap_or("Other"),
                    price_cents: r.get(3)?,
                    stock: r.get(4)?,
                    added_year: r.get(5)?,
                    units_sold: r.get(6)?,
                })
            })
            .optional()
        })
    }

    /// Every fortune, `(id, message)`, in table order.
    pub fn fortunes(&self) -> rusqlite::Result<Vec<(i64, String)>> {
        self.with(|c| {
            c.prepare_cached("SELECT id, message FROM fortune")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    /// Units sold in `year`, per category and region (a product sells in region `id % REGIONS`).
    pub fn year_sales(&self, year: u32) -> rusqlite::Result<YearSales> {
        self.with(|c| {
            let mut out = [[0.0; REGIONS]; CATEGORIES.len()];
            let mut stmt = c.prepare_cached(
                "SELECT p.category, p.id % ?2, SUM(s.units)
                 FROM sales s JOIN product p ON p.id = s.product_id
                 WHERE s.year = ?1 GROUP BY 1, 2",
            )?;
            let rows = stmt.query_map([year as i64, REGIONS as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)? as usize,
                    r.get::<_, i64>(1)? as usize,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (category, region, units) = row?;
                if let Some(cell) = out.get_mut(category).and_then(|c| c.get_mut(region)) {
                    *cell = units as f64;
                }
            }
            Ok(out)
        })
    }
}
