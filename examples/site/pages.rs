//! The routes: handlers, their budgets (`#[pagegen::route]`) and their templates.
//!
//! | route | work |
//! |---|---|
//! | `GET /` | light: the in-memory catalog's categories and eight featured products |
//! | `GET /product/{id}` | a database query (the row and its total sales) and two file reads (description, picture) |
//! | `GET /search?q=&limit=` | CPU: every product scored against the query ([`super::search`]) |
//! | `GET /report/{year}` | memory: ≈ 6.4 MiB per year from `year` to 2025, held across awaits ([`super::report`]) |
//! | `GET /feed` | I/O: the 40 newest products, one description file read each |
//! | `GET /fortunes` | TechEmpower Fortunes: a database query, one row added, sorted, escaped |
//! | `GET /synthetic?cpu_us=&mem_kb=` | exactly the CPU and memory asked for ([`super::synthetic`]) |
//!
//! `#[pagegen::route]` gives pagegen each class's prior and caps; on tokio it expands to the same
//! handler with a call that finds no pagegen runtime and does nothing, so the same code serves both.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::data::{self, Paths, Product, CATEGORIES, FIRST_YEAR, LAST_YEAR};
use super::db::Db;
use super::platform::Platform;
use super::report::{self, Cube, Line, CUBE_BYTES};
use super::search::{self, Doc, Piece, MAX_LIMIT};
use super::synthetic;

/// Products on `/feed`.
pub const FEED_ITEMS: usize = 40;
/// Products featured on `/`.
pub const FEATURED: usize = 8;
/// `/search`'s `limit` when none is given.
pub const DEFAULT_LIMIT: usize = 20;

/// Everything the handlers share.
#[derive(Debug)]
pub struct Site {
    /// Which runtime's API the handlers use.
    pub platform: Platform,
    /// The generated files.
    pub paths: Paths,
    /// The database.
    pub db: Db,
    /// Every product, by id − 1.
    pub catalog: Vec<Product>,
    /// The search index, in catalog order.
    pub index: Vec<Doc>,
    /// Ids of the [`FEED_ITEMS`] newest products, newest first.
    pub newest: Vec<u32>,
    /// Products per category.
    pub categories: Vec<(&'static str, usize)>,
}

impl Site {
    /// The site over a generated tree and its catalog.
    pub fn new(platform: Platform, paths: Paths, catalog: Vec<Product>) -> Self {
        let index = catalog
            .iter()
            .map(|p| Doc::new(p.id, &p.name, &p.description))
            .collect();
        let mut by_age: Vec<&Product> = catalog.iter().collect();
        by_age.sort_by(|a, b| b.added_year.cmp(&a.added_year).then(b.id.cmp(&a.id)));
        let newest = by_age.iter().take(FEED_ITEMS).map(|p| p.id).collect();
        let categories = CATEGORIES
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, catalog.iter().filter(|p| p.category == i).count()))
            .collect();
        Site {
            platform,
            db: Db::new(paths.db()),
            paths,
            catalog,
            index,
            newest,
            categories,
        }
    }

    fn product(&self, id: u32) -> Option<&Product> {
        self.catalog.get(id.checked_sub(1)? as usize)
    }
}

/// The router of every route, over `site`.
pub fn router(site: Arc<Site>) -> Router {
    routes(site, |_, method_router| method_router)
}

/// The router, with `wrap(path, route)` applied to each route (the `tokio-limits` variant adds its
/// per-route limits this way).
pub fn routes(
    site: Arc<Site>,
    wrap: impl Fn(
        &str,
        axum::routing::MethodRouter<Arc<Site>>,
    ) -> axum::routing::MethodRouter<Arc<Site>>,
) -> Router {
    Router::new()
        .route("/", wrap("/", get(home)))
        .route("/product/{id}", wrap("/product/{id}", get(product)))
        .route("/search", wrap("/search", get(search_page)))
        .route("/report/{year}", wrap("/report/{year}", get(report_page)))
        .route("/feed", wrap("/feed", get(feed)))
        .route("/fortunes", wrap("/fortunes", get(fortunes)))
        .route("/synthetic", wrap("/synthetic", get(synthetic_page)))
        .with_state(site)
}

/// The routes as `main` lists them: path and what it does.
pub const ROUTES: [(&str, &str); 7] = [
    ("/", "home page (light)"),
    ("/product/{id}", "a database query and two file reads"),
    (
        "/search?q=&limit=",
        "every product scored against the query (CPU)",
    ),
    (
        "/report/{year}",
        "hourly sales from year to 2025, ~6.4 MiB per year (memory)",
    ),
    ("/feed", "the 40 newest products, 40 file reads (I/O)"),
    ("/fortunes", "TechEmpower Fortunes"),
    (
        "/synthetic?cpu_us=&mem_kb=",
        "exactly that CPU and memory (trace replay)",
    ),
];

/// Why a page was not served.
#[derive(Debug)]
pub enum PageError {
    /// 404.
    NotFound(String),
    /// 400.
    BadRequest(String),
    /// 500, with what failed.
    Internal(String),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            PageError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            msg,
        )
            .into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> PageError {
    PageError::Internal(e.to_string())
}

/// A template rendered as an HTML page (`text/html; charset=utf-8`).
fn render(t: &impl Template) -> Result<Html<String>, PageError> {
    t.render().map(Html).map_err(internal)
}

/// Cents as "$12.34".
fn price(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

type S = State<Arc<Site>>;

/// A product in a list.
#[derive(Debug)]
struct Item {
    id: u32,
    name: String,
    price: String,
}

#[derive(Template)]
#[template(path = "home.html", config = "examples/site/askama.toml")]
struct HomePage<'a> {
    products: usize,
    categories: &'a [(&'static str, usize)],
    featured: Vec<Item>,
}

/// `/`: light — the catalog is in memory.
#[pagegen::route(path = "/", cpu = "300us", timeout = "2s")]
async fn home(State(site): S) -> Result<Html<String>, PageError> {
    // Every 97th product: spread over the catalog, the same on every request.
    let featured = site
        .catalog
        .iter()
        .step_by(97)
        .take(FEATURED)
        .map(|p| Item {
            id: p.id,
            name: p.name.clone(),
            price: price(p.price_cents),
        })
        .collect();
    render(&HomePage {
        products: site.catalog.len(),
        categories: &site.categories,
        featured,
    })
}

#[derive(Template)]
#[template(path = "product.html", config = "examples/site/askama.toml")]
struct ProductPage {
    id: u32,
    name: String,
    price: String,
    category: &'static str,
    stock: i64,
    added_year: u32,
    units_sold: i64,
    description: String,
    image: String,
}

/// `/product/{id}`: the row from the database, the description and picture from their files.
#[pagegen::route(path = "/product/{id}", io_ops = 2, timeout = "2s")]
async fn product(State(site): S, Path(id): Path<u32>) -> Result<Html<String>, PageError> {
    let db = site.db.clone();
    let row = site
        .platform
        .blocking(move || db.product(id))
        .await
        .map_err(internal)?
        .ok_or_else(|| PageError::NotFound(format!("no product {id}")))?;
    let description = site
        .platform
        .read_to_string(site.paths.description(id))
        .await
        .map_err(internal)?;
    let image = site
        .platform
        .read_to_string(site.paths.image(id))
        .await
        .map_err(internal)?;
    render(&ProductPage {
        id: row.id,
        name: row.name,
        price: price(row.price_cents),
        category: row.category,
        stock: row.stock,
        added_year: row.added_year,
        units_sold: row.units_sold,
        description,
        image,
    })
}

/// `/search`'s query string.
#[derive(Debug, serde::Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
    limit: Option<usize>,
}

#[derive(Debug)]
struct Hit {
    id: u32,
    name: String,
    price: String,
    score: u32,
    excerpt: Vec<Piece>,
}

#[derive(Template)]
#[template(path = "search.html", config = "examples/site/askama.toml")]
struct SearchPage {
    q: String,
    limit: usize,
    matched: usize,
    hits: Vec<Hit>,
}

/// `/search?q=&limit=`: CPU that grows with the query and the limit (see [`super::search`]).
#[pagegen::route(path = "/search", cpu = "20ms", timeout = "5s")]
async fn search_page(
    State(site): S,
    Query(SearchQuery { q, limit }): Query<SearchQuery>,
) -> Result<Html<String>, PageError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let (ranked, matched) = search::search(&site.index, &q, limit);
    let hits = ranked
        .into_iter()
        .filter_map(|(id, score)| {
            let p = site.product(id)?;
            Some(Hit {
                id,
                name: p.name.clone(),
                price: price(p.price_cents),
                score,
                excerpt: search::excerpt(&p.description, &q),
            })
        })
        .collect();
    render(&SearchPage {
        q,
        limit,
        matched,
        hits,
    })
}

#[derive(Template)]
#[template(path = "report.html", config = "examples/site/askama.toml")]
struct ReportPage {
    from: u32,
    to: u32,
    years: usize,
    cube_mib: usize,
    lines: Vec<Line>,
}

/// `/report/{year}`: memory that grows with the span of years (see [`super::report`]); over its
/// 160 MiB cap (a span of more than ~24 years) pagegen cancels it with a 503.
#[pagegen::route(path = "/report/{year}", mem = "160MiB", timeout = "20s")]
async fn report_page(State(site): S, Path(year): Path<u32>) -> Result<Html<String>, PageError> {
    if !(FIRST_YEAR..=LAST_YEAR).contains(&year) {
        return Err(PageError::NotFound(format!(
            "no sales in {year}: years are {FIRST_YEAR} to {LAST_YEAR}"
        )));
    }
    let mut cubes = Vec::new();
    for y in year..=LAST_YEAR {
        let db = site.db.clone();
        let sales = site
            .platform
            .blocking(move || db.year_sales(y))
            .await
            .map_err(internal)?;
        cubes.push(Cube::build(y, &sales));
        site.platform.yield_now().await;
    }
    let lines = report::lines(&cubes);
    let page = ReportPage {
        from: year,
        to: LAST_YEAR,
        years: cubes.len(),
        cube_mib: (cubes.len() * CUBE_BYTES) >> 20,
        lines,
    };
    drop(cubes);
    render(&page)
}

#[derive(Debug)]
struct FeedItem {
    id: u32,
    name: String,
    added_year: u32,
    teaser: String,
}

#[derive(Template)]
#[template(path = "feed.html", config = "examples/site/askama.toml")]
struct FeedPage {
    items: Vec<FeedItem>,
}

/// `/feed`: the newest products, each teaser read from its description file.
#[pagegen::route(path = "/feed", io_ops = 40, io_depth = 8, timeout = "5s")]
async fn feed(State(site): S) -> Result<Html<String>, PageError> {
    let mut items = Vec::with_capacity(site.newest.len());
    for &id in &site.newest {
        let text = site
            .platform
            .read_to_string(site.paths.description(id))
            .await
            .map_err(internal)?;
        let teaser = match text.find(". ") {
            Some(end) => text[..=end].to_owned(),
            None => text,
        };
        let p = site
            .product(id)
            .ok_or_else(|| internal(format!("product {id} left the catalog")))?;
        items.push(FeedItem {
            id,
            name: p.name.clone(),
            added_year: p.added_year,
            teaser,
        });
    }
    render(&FeedPage { items })
}

#[derive(Template)]
#[template(path = "fortunes.html", config = "examples/site/askama.toml")]
struct FortunesPage {
    fortunes: Vec<(i64, String)>,
}

/// The fortune TechEmpower's test adds at request time.
pub const EXTRA_FORTUNE: &str = "Additional fortune added at request time.";

/// `/fortunes`: TechEmpower's Fortunes test — every row from the database, one more added, sorted
/// by message, escaped by the template.
#[pagegen::route(path = "/fortunes", cpu = "1ms", timeout = "2s")]
async fn fortunes(State(site): S) -> Result<Html<String>, PageError> {
    let db = site.db.clone();
    let mut fortunes = site
        .platform
        .blocking(move || db.fortunes())
        .await
        .map_err(internal)?;
    fortunes.push((0, EXTRA_FORTUNE.to_owned()));
    fortunes.sort_by(|a, b| a.1.cmp(&b.1));
    render(&FortunesPage { fortunes })
}

/// `/synthetic`'s query string.
#[derive(Debug, serde::Deserialize)]
struct SyntheticQuery {
    #[serde(default)]
    cpu_us: u64,
    #[serde(default)]
    mem_kb: u64,
}

/// `/synthetic?cpu_us=&mem_kb=`: exactly that CPU and memory (see [`super::synthetic`]); what the
/// trace says, learned per class like any other route.
#[pagegen::route(path = "/synthetic")]
async fn synthetic_page(
    State(site): S,
    Query(SyntheticQuery { cpu_us, mem_kb }): Query<SyntheticQuery>,
) -> Result<String, PageError> {
    if mem_kb > synthetic::MAX_MEM_KB || cpu_us > synthetic::MAX_CPU.as_micros() as u64 {
        return Err(PageError::BadRequest(format!(
            "at most cpu_us={} and mem_kb={}",
            synthetic::MAX_CPU.as_micros(),
            synthetic::MAX_MEM_KB
        )));
    }
    let done = synthetic::run(site.platform, Duration::from_micros(cpu_us), mem_kb).await;
    Ok(format!(
        "cpu_us={} mem_kb={} yields={} checksum={:016x}\n",
        done.cpu_us, done.mem_kb, done.yields, done.checksum
    ))
}

/// Loads the catalog of a generated tree and makes the site.
///
/// # Errors
/// The tree cannot be read.
pub fn load(platform: Platform, paths: Paths) -> anyhow::Result<Site> {
    let catalog = data::load_catalog(&paths).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Site::new(platform, paths, catalog))
}
