//! `/search`: every product scored in memory against the query, typo-tolerant.
//!
//! Each query term is compared with every word of every product's name and description: an exact
//! word scores most, a prefix less, a word one edit away (Levenshtein, for terms of four letters or
//! more) least; name words count double. So the CPU a search takes grows with the number of terms
//! and their length (the edit distance is a small dynamic programme per word pair), and with
//! `limit`, since each of the `limit` best results gets a highlighted excerpt built from its
//! description. No caching: the same query does the same work each time.

/// A product as the index holds it.
#[derive(Debug)]
pub struct Doc {
    /// Product id.
    pub id: u32,
    /// Lower-case words of the name.
    name: Vec<String>,
    /// Lower-case words of the description.
    body: Vec<String>,
}

/// Longest query, in terms; longer queries are cut (a request cannot ask for unbounded work).
pub const MAX_TERMS: usize = 8;
/// Longest term, in characters.
pub const MAX_TERM_CHARS: usize = 24;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 1000;

/// The lower-case alphanumeric words of `text`.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

impl Doc {
    /// Indexes one product.
    pub fn new(id: u32, name: &str, description: &str) -> Self {
        Doc {
            id,
            name: words(name).collect(),
            body: words(description).collect(),
        }
    }
}

/// The query's terms: at most [`MAX_TERMS`], each at most [`MAX_TERM_CHARS`] characters.
pub fn terms(q: &str) -> Vec<Vec<char>> {
    words(q)
        .take(MAX_TERMS)
        .map(|w| w.chars().take(MAX_TERM_CHARS).collect())
        .collect()
}

/// Whether `a` and `b` are at most one edit apart (Levenshtein, computed in full: the point is
/// honest work per word pair, not the fastest possible check).
fn within_one_edit(a: &[char], b: &str, row: &mut Vec<usize>) -> bool {
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    row.clear();
    row.extend(0..=b.len());
    for (i, ca) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (up + 1).min(row[j] + 1).min(diag + usize::from(ca != cb));
            diag = up;
        }
    }
    row[b.len()] <= 1
}

/// How well one word matches one term: 3 exact, 2 prefix, 1 one edit away, 0 not at all.
fn word_score(term: &[char], term_str: &str, word: &str, row: &mut Vec<usize>) -> u32 {
    if word == term_str {
        3
    } else if term.len() >= 3 && word.starts_with(term_str) {
        2
    } else if term.len() >= 4 && within_one_edit(term, word, row) {
        1
    } else {
        0
    }
}

/// A product's score for the query: per term, the best word in the name (doubled) or body.
pub fn score(doc: &Doc, terms: &[Vec<char>], term_strs: &[String], row: &mut Vec<usize>) -> u32 {
    terms
        .iter()
        .zip(term_strs)
        .map(|(t, s)| {
            let name = doc
                .name
                .iter()
                .map(|w| 2 * word_score(t, s, w, row))
                .max()
                .unwrap_or(0);
            let body = doc
                .body
                .iter()
                .map(|w| word_score(t, s, w, row))
                .max()
                .unwrap_or(0);
            name.max(body)
        })
        .sum()
}

/// The `limit` best products for `q`: `(id, score)`, best first, ties by id; and how many matched.
pub fn search(index: &[Doc], q: &str, limit: usize) -> (Vec<(u32, u32)>, usize) {
    let terms = terms(q);
    let term_strs: Vec<String> = terms.iter().map(|t| t.iter().collect()).collect();
    let mut row = Vec::new();
    let mut hits: Vec<(u32, u32)> = index
        .iter()
        .map(|d| (d.id, score(d, &terms, &term_strs, &mut row)))
        .filter(|&(_, s)| s > 0)
        .collect();
    let matched = hits.len();
    hits.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    hits.truncate(limit);
    (hits, matched)
}

/// A run of excerpt text, highlighted or not (the template escapes both).
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The text.
    pub text: String,
    /// Whether it matched a term.
    pub hit: bool,
}

/// The first sentence of `description` with a word matching the query (else the first sentence),
/// cut into highlighted and plain pieces.
pub fn excerpt(description: &str, q: &str) -> Vec<Piece> {
    let terms = terms(q);
    let term_strs: Vec<String> = terms.iter().map(|t| t.iter().collect()).collect();
    let mut row = Vec::new();
    let matches = |w: &str, row: &mut Vec<usize>| {
        let w = w.to_lowercase();
        terms
            .iter()
            .zip(&term_strs)
            .any(|(t, s)| word_score(t, s, &w, row) > 0)
    };
    let sentences: Vec<&str> = description.split_inclusive(". ").collect();
    let sentence = sentences
        .iter()
        .find(|s| {
            s.split(|c: char| !c.is_alphanumeric())
                .any(|w| !w.is_empty() && matches(w, &mut row))
        })
        .or(sentences.first())
        .copied()
        .unwrap_or("");
    let mut pieces: Vec<Piece> = Vec::new();
    let mut rest = sentence;
    while !rest.is_empty() {
        let word_len = rest
            .find(|c: char| !c.is_alphanumeric())
            .unwrap_or(rest.len());
        let (text, hit, len) = if word_len > 0 {
            let w = &rest[..word_len];
            (w, matches(w, &mut row), word_len)
        } else {
            let sep = rest
                .find(|c: char| c.is_alphanumeric())
                .unwrap_or(rest.len());
            (&rest[..sep], false, sep)
        };
        match pieces.last_mut() {
            Some(last) if !last.hit && !hit => last.text.push_str(text),
            _ => pieces.push(Piece {
                text: text.to_owned(),
                hit,
            }),
        }
        rest = &rest[len..];
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_prefix_beats_one_typo() {
        let mut row = Vec::new();
        let t: Vec<char> = "kettle".chars().collect();
        assert_eq!(word_score(&t, "kettle", "kettle", &mut row), 3);
        assert_eq!(word_score(&t, "kettle", "kettles", &mut row), 2);
        assert_eq!(word_score(&t, "kettle", "kettel", &mut row), 0);
        assert_eq!(word_score(&t, "kettle", "kettlf", &mut row), 1);
        assert_eq!(word_score(&t, "kettle", "lamp", &mut row), 0);
    }

    #[test]
    fn results_are_ranked_and_cut_at_the_limit() {
        let index = vec![
            Doc::new(1, "Oak lamp", "A lamp."),
            Doc::new(2, "Steel kettle", "A kettle of oak."),
            Doc::new(3, "Oak kettle", "An oak kettle."),
        ];
        assert_eq!(
            search(&index, "oak kettle", 10),
            (vec![(3, 12), (2, 9), (1, 6)], 3)
        );
        assert_eq!(search(&index, "oak kettle", 1).0, vec![(3, 12)]);
        let pieces = excerpt("Plain words. The oak lamp glows. ", "OAK");
        let hits: Vec<&str> = pieces
            .iter()
            .filter(|p| p.hit)
            .map(|p| p.text.as_str())
            .collect();
        assert_eq!(hits, ["oak"]);
    }
}
