//! `/report/{year}`: sales from `year` to the last year, modelled hour by hour.
//!
//! For each year the report queries that year's sales per category and region, spreads them over
//! every hour of the year (a daily, weekly and seasonal curve per category) into a dense
//! `hours × categories × regions` cube of `f64`, and keeps every year's cube until the end, when it
//! compares each year's hourly profile with the previous year's. A cube is
//! [`CUBE_BYTES`] (≈ 6.4 MiB), so memory grows with the span of years: ≈ 6 MiB for the last year
//! alone, ≈ 230 MiB from 1990. Between years the handler awaits its database query and yields, so
//! the memory is held across awaits, as a report that streams from a database would.

use super::data::{CATEGORIES, REGIONS};
use super::db::YearSales;

/// Hours in a leap year: every cube has this many rows (a common year leaves its last day 0).
pub const HOURS: usize = 366 * 24;
/// One year's cube, bytes.
pub const CUBE_BYTES: usize = HOURS * CATEGORIES.len() * REGIONS * std::mem::size_of::<f64>();

/// One year of hourly sales: `cube[(hour * CATEGORIES + category) * REGIONS + region]`.
#[derive(Debug)]
pub struct Cube {
    /// The year.
    pub year: u32,
    cells: Vec<f64>,
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

/// The share of a year's sales falling in `hour` for a category, before normalisation: a daily
/// curve (evening peak), a weekly one (weekends busier for some categories) and a seasonal one
/// (each category peaks in its own month).
fn shape(category: usize, hour: usize) -> f64 {
    use std::f64::consts::TAU;
    let day = hour / 24;
    let h = (hour % 24) as f64;
    let daily = 1.0 + 0.8 * (TAU * (h - 19.0) / 24.0).cos();
    let weekend = if day % 7 >= 5 {
        1.0 + 0.1 * (category % 4) as f64
    } else {
        1.0
    };
    let peak_day = (category as f64) * 30.5 + 15.0;
    let seasonal = 1.0 + 0.5 * (TAU * (day as f64 - peak_day) / 366.0).cos();
    daily * weekend * seasonal
}

/// [`shape`] for every category and hour, computed once per process: the curves do not change,
/// only the year's totals do, and recomputing two cosines per cell would make the report
/// CPU-bound when it is meant to be memory-bound.
fn shapes() -> &'static [f64] {
    static SHAPES: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    SHAPES.get_or_init(|| {
        (0..CATEGORIES.len())
            .flat_map(|c| (0..HOURS).map(move |h| shape(c, h)))
            .collect()
    })
}

impl Cube {
    /// Spreads a year's sales over its hours.
    pub fn build(year: u32, sales: &YearSales) -> Cube {
        let hours = if is_leap(year) { HOURS } else { HOURS - 24 };
        let mut cells = vec![0.0; HOURS * CATEGORIES.len() * REGIONS];
        for (category, regions) in sales.iter().enumerate() {
            let curve = &shapes()[category * HOURS..category * HOURS + hours];
            let total: f64 = curve.iter().sum();
            for (hour, s) in curve.iter().enumerate() {
                let share = s / total;
                let base = (hour * CATEGORIES.len() + category) * REGIONS;
                for (region, units) in regions.iter().enumerate() {
                    cells[base + region] = units * share;
                }
            }
        }
        Cube { year, cells }
    }

    /// A category's units in one hour, all regions together.
    fn hour_total(&self, category: usize, hour: usize) -> f64 {
        let base = (hour * CATEGORIES.len() + category) * REGIONS;
        self.cells[base..base + REGIONS].iter().sum()
    }
}

/// One report line: a category in a year.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Year.
    pub year: u32,
    /// Category name.
    pub category: &'static str,
    /// Units sold.
    pub units: u64,
    /// Busiest hour of the year, as "MM-DD HH:00" (day counted from 1 January).
    pub peak: String,
    /// Busiest region.
    pub top_region: usize,
    /// Change of units against the previous year, percent; `None` for the first year.
    pub growth: Option<f64>,
    /// Correlation of the hourly curve with the previous year's; `None` for the first year.
    pub similarity: Option<f64>,
}

/// "MM-DD HH:00" of an hour of a year.
fn when(year: u32, hour: usize) -> String {
    const DAYS: [usize; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut day = hour / 24;
    for (m, &len) in DAYS.iter().enumerate() {
        let len = len + usize::from(m == 1 && is_leap(year));
        if day < len {
            return format!("{:02}-{:02} {:02}:00", m + 1, day + 1, hour % 24);
        }
        day -= len;
    }
    format!("12-31 {:02}:00", hour % 24)
}

/// Pearson correlation of two categories' hourly curves.
fn correlation(a: &Cube, b: &Cube, category: usize) -> f64 {
    let n = HOURS as f64;
    let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for h in 0..HOURS {
        let x = a.hour_total(category, h);
        let y = b.hour_total(category, h);
        sa += x;
        sb += y;
        saa += x * x;
        sbb += y * y;
        sab += x * y;
    }
    let cov = sab - sa * sb / n;
    let var = ((saa - sa * sa / n) * (sbb - sb * sb / n)).sqrt();
    if var > 0.0 {
        cov / var
    } else {
        0.0
    }
}

/// The report's lines from every year's cube, oldest first.
pub fn lines(cubes: &[Cube]) -> Vec<Line> {
    let mut out = Vec::with_capacity(cubes.len() * CATEGORIES.len());
    // Each category's units in the year before, for the growth column.
    let mut last_units = [0.0; CATEGORIES.len()];
    for (i, cube) in cubes.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| &cubes[p]);
        for (category, name) in CATEGORIES.iter().enumerate() {
            let mut units = 0.0;
            let mut per_region = [0.0; REGIONS];
            let (mut peak_hour, mut peak) = (0, f64::MIN);
            for h in 0..HOURS {
                let base = (h * CATEGORIES.len() + category) * REGIONS;
                let row = &cube.cells[base..base + REGIONS];
                let t: f64 = row.iter().sum();
                for (acc, v) in per_region.iter_mut().zip(row) {
                    *acc += v;
                }
                units += t;
                if t > peak {
                    (peak_hour, peak) = (h, t);
                }
            }
            let top_region = (0..REGIONS)
                .max_by(|&a, &b| per_region[a].total_cmp(&per_region[b]))
                .unwrap_or(0);
            let before = std::mem::replace(&mut last_units[category], units);
            let growth = prev.map(|_| {
                if before > 0.0 {
                    (units - before) / before * 100.0
                } else {
                    0.0
                }
            });
            out.push(Line {
                year: cube.year,
                category: name,
                units: units.round() as u64,
                peak: when(cube.year, peak_hour),
                top_region,
                growth,
                similarity: prev.map(|p| correlation(p, cube, category)),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cube_keeps_its_year_total() {
        let mut sales = [[0.0; REGIONS]; CATEGORIES.len()];
        sales[3][5] = 1000.0;
        let cube = Cube::build(2023, &sales);
        let total: f64 = cube.cells.iter().sum();
        assert!((total - 1000.0).abs() < 1e-6, "{total}");
        assert_eq!(when(2024, 59 * 24 + 7), "02-29 07:00");
        assert_eq!(when(2023, 59 * 24), "03-01 00:00");
    }
}
