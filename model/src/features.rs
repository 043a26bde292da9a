//! Request features: a fixed-width vector built from what is known before a request runs.
//!
//! Layout of [`Features`] (width [`FEATURE_WIDTH`] = 32), every slot a finite `f32` of order 1:
//!
//! | slot | meaning |
//! |---|---|
//! | 0 | constant 1 (a bias the head can use) |
//! | 1 | class id, hashed to `[0, 1)` (identity only; the recurrent state carries what a class *does*) |
//! | 2 | path length / 64 |
//! | 3 | path segments / 8 |
//! | 4 | query length / 64 |
//! | 5 | query parameters / 8 |
//! | 6 | `ln(1 + body bytes) / 16` |
//! | 7 | header count / 32 |
//! | 8..12 | numeric path segments in order (first 4), as `signed ln(1 + |v|) / 8` |
//! | 12..16 | numeric query values, slot chosen by a hash of the key, same scaling |
//! | 16..20 | lengths / 32 of non-numeric query values (e.g. a search string), slot chosen by a hash of the key; the longest where keys share a slot |
//! | 20..32 | hashed tokens: each non-numeric path segment and each `key` adds 1/4 to a bucket |
//!
//! Nothing grows with cardinality: values and tokens fold into fixed buckets, so a record stays fixed
//! size whatever the site's URLs look like. The hash is FNV-1a (stable across builds and platforms, so
//! stored features stay meaningful after an upgrade). [`extract`] is allocation-free.

use pagegen_core::{ClassId, Features, FEATURE_WIDTH};

/// First slot of numeric path segments.
pub const PATH_NUM: usize = 8;
/// First slot of numeric query values.
pub const QUERY_NUM: usize = 12;
/// First slot of query value lengths.
pub const QUERY_LEN: usize = 16;
/// First slot of hashed tokens.
pub const TOKENS: usize = 20;
const NUM_SLOTS: usize = 4;
const TOKEN_SLOTS: usize = FEATURE_WIDTH - TOKENS;

/// FNV-1a over bytes (Fowler–Noll–Vo; chosen for stability, not strength).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `sign(v) * ln(1 + |v|) / 8`: numbers from 1 to 1e12 land in `[0, 3.5]`.
fn squash(v: f64) -> f32 {
    let s = ((v.abs().ln_1p() / 8.0) as f32).min(16.0);
    if v < 0.0 {
        -s
    } else {
        s
    }
}

/// Parses a parameter as a number if it is one (integers and decimals; nothing else).
fn number(s: &str) -> Option<f64> {
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    v.is_finite().then_some(v)
}

/// Builds the features of one request from plain inputs (no HTTP types, so any server can call it).
///
/// `path` is the URL path (`/report/2024`), `query` the part after `?` without it. Percent-encoding is
/// left as is: the features only need to be stable, not decoded.
pub fn extract(
    class: ClassId,
    path: &str,
    query: Option<&str>,
    body_len: u64,
    header_count: usize,
) -> Features {
    let mut f = [0f32; FEATURE_WIDTH];
    f[0] = 1.0;
    f[1] = (fnv1a(&class.raw().to_le_bytes()) % 1024) as f32 / 1024.0;
    f[2] = (path.len() as f32 / 64.0).min(16.0);
    let mut segments = 0usize;
    let mut numeric = 0usize;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        segments += 1;
        match number(seg) {
            Some(v) if numeric < NUM_SLOTS => {
                f[PATH_NUM + numeric] = squash(v);
                numeric += 1;
            }
            Some(_) => {}
            None => f[TOKENS + (fnv1a(seg.as_bytes()) as usize % TOKEN_SLOTS)] += 0.25,
        }
    }
    f[3] = (segments as f32 / 8.0).min(16.0);
    if let Some(q) = query {
        f[4] = (q.len() as f32 / 64.0).min(16.0);
        let mut params = 0usize;
        for pair in q.split('&').filter(|s| !s.is_empty()) {
            params += 1;
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let h = fnv1a(key.as_bytes()) as usize;
            // A number goes to the value slots, any other value's length to the length slots. Keys
            // share slots (4 of each), so a number's length must not land there too: `q` and
            // `limit` hash to the same slot, and `limit=20` after `q=…` used to overwrite the
            // search string's length with 2. Where two strings share a slot the longer counts, so
            // the order of the parameters does not matter.
            match number(value) {
                Some(v) => f[QUERY_NUM + h % NUM_SLOTS] = squash(v),
                None => {
                    let slot = &mut f[QUERY_LEN + h % NUM_SLOTS];
                    *slot = slot.max((value.len() as f32 / 32.0).min(16.0));
                }
            }
            f[TOKENS + (h >> 8) % TOKEN_SLOTS] += 0.25;
        }
        f[5] = (params as f32 / 8.0).min(16.0);
    }
    f[6] = ((body_len as f64).ln_1p() / 16.0) as f32;
    f[7] = (header_count as f32 / 32.0).min(16.0);
    for t in &mut f[TOKENS..] {
        *t = t.min(4.0);
    }
    Features(f)
}

/// Replaces non-finite values by 0 and clamps every slot to `[-16, 16]`, so stored features from any
/// source (an old build, a corrupt import) are safe to feed to a model.
pub fn sanitize(features: &Features) -> Features {
    let mut f = features.0;
    for v in &mut f {
        *v = if v.is_finite() {
            v.clamp(-16.0, 16.0)
        } else {
            0.0
        };
    }
    Features(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_path_and_query_values_land_in_their_slots() {
        let a = extract(
            ClassId::from_raw(3),
            "/report/2024",
            Some("page=2&size=50"),
            0,
            4,
        );
        let b = extract(
            ClassId::from_raw(3),
            "/report/1999",
            Some("page=2&size=50"),
            0,
            4,
        );
        assert_eq!(a.0[0], 1.0);
        assert!(a.0[PATH_NUM] > 0.9 && a.0[PATH_NUM] != b.0[PATH_NUM]);
        assert_eq!(a.0[PATH_NUM + 1], 0.0);
        assert!(
            a.0[QUERY_NUM..QUERY_NUM + 4]
                .iter()
                .filter(|&&v| v > 0.0)
                .count()
                >= 1
        );
        assert_eq!(a.0[5], 2.0 / 8.0);
        assert_eq!(a.0[7], 4.0 / 32.0);
        assert_eq!(a.0[TOKENS..], b.0[TOKENS..]);
    }

    #[test]
    fn string_parameters_count_by_length_and_token() {
        let short = extract(ClassId::DEFAULT, "/search", Some("q=ab"), 0, 0);
        let long = extract(
            ClassId::DEFAULT,
            "/search",
            Some("q=abcdefghijklmnop"),
            0,
            0,
        );
        let s: f32 = short.0[QUERY_LEN..QUERY_LEN + 4].iter().sum();
        let l: f32 = long.0[QUERY_LEN..QUERY_LEN + 4].iter().sum();
        assert!(l > s);
        assert!(short.0[TOKENS..].iter().sum::<f32>() > 0.0);
    }

    #[test]
    fn a_numeric_parameter_does_not_hide_a_string_sharing_its_slot() {
        // `q` and `limit` hash to the same slot (FNV-1a mod 4): the search string's length must
        // survive a `limit` after it, whatever the order.
        assert_eq!(fnv1a(b"q") % 4, fnv1a(b"limit") % 4);
        let len = |q: &str| -> f32 {
            extract(ClassId::DEFAULT, "/search", Some(q), 0, 0).0[QUERY_LEN..QUERY_LEN + 4]
                .iter()
                .sum()
        };
        let short = len("q=ab&limit=20");
        let long = len("q=abcdefghijklmnopqrstuvwxyzabcdefgh&limit=20");
        assert_eq!(short, 2.0 / 32.0);
        assert_eq!(long, 34.0 / 32.0);
        assert_eq!(len("limit=20&q=ab"), short);
        let f = extract(ClassId::DEFAULT, "/search", Some("q=ab&limit=20"), 0, 0);
        assert_eq!(
            f.0[QUERY_NUM + (fnv1a(b"limit") % 4) as usize],
            squash(20.0)
        );
    }

    #[test]
    fn hostile_inputs_stay_finite_and_bounded() {
        let long = "/x".repeat(10_000);
        let q = "a=1e308&b=-1e308&c=nan&d=inf&".repeat(1000);
        let f = extract(
            ClassId::from_raw(u32::MAX),
            &long,
            Some(&q),
            u64::MAX,
            usize::MAX,
        );
        assert!(f.0.iter().all(|v| v.is_finite() && v.abs() <= 16.0));
        let mut bad = Features::default();
        bad.0[3] = f32::NAN;
        bad.0[4] = f32::INFINITY;
        bad.0[5] = -100.0;
        let s = sanitize(&bad);
        assert_eq!((s.0[3], s.0[4], s.0[5]), (0.0, 0.0, -16.0));
    }
}
