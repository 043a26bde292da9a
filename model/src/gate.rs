//! Champion/challenger: score predictors on held-out recent records and decide who serves.
//!
//! Every contender is replayed over the same window in time order — predict each request from what
//! came before it, then observe it — through the [`Predictor`] trait, with a fresh instance and a
//! virtual clock that follows the records' admission times, so the comparison is exactly what serving
//! would have done. Only the *validate* part (the newest records) is scored; earlier records only warm
//! up state. The score is the mean, over scored records and resources, of the pinball loss of the
//! central estimate (median) plus that of the upper estimate (the upper quantile), in log space;
//! censored records count only under-prediction. Lower is better.
//!
//! Rule ([`decide`]): a challenger is promoted only if its score is finite and strictly below both the
//! current champion's and the best baseline's. Whoever then scores best between the (possibly new)
//! champion and the best baseline serves.

use pagegen_core::ProfileRecord;

use crate::dataset::Part;
use crate::predictor::Predictor;
use crate::target::{pinball, targets, to_log, RESOURCES, UPPER_QUANTILE};
use pagegen_core::Resource;

/// Mean pinball score of `predictor` over the validate part of `records` (time-ordered); `NaN`
/// if there is nothing to score. `before` runs before each record (to move a virtual clock).
pub fn score(
    predictor: &dyn Predictor,
    records: &[(ProfileRecord, Part)],
    mut before: impl FnMut(&ProfileRecord),
) -> f32 {
    let mut sum = 0f64;
    let mut n = 0usize;
    for (r, part) in records {
        before(r);
        if *part == Part::Validate {
            let d = predictor.predict(r.class, &r.features);
            let y = targets(r);
            let c = r.censored();
            for (i, res) in Resource::ALL.into_iter().enumerate().take(RESOURCES) {
                let e = d.get(res);
                sum += f64::from(pinball(y[i], to_log(e.central), 0.5, c));
                sum += f64::from(pinball(y[i], to_log(e.upper), UPPER_QUANTILE, c));
            }
            n += 1;
        }
        predictor.observe(r);
    }
    if n == 0 {
        f32::NAN
    } else {
        (sum / (n * RESOURCES) as f64) as f32
    }
}

/// Who serves requests (defined in pagegen-core, so a profile record can say which one served it).
pub use pagegen_core::Serving;

/// Scores of one gate round and its decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The challenger's score.
    pub challenger: f32,
    /// The champion's score (`None`: no champion yet).
    pub champion: Option<f32>,
    /// Each baseline's score.
    pub baselines: Vec<(Serving, f32)>,
    /// Whether the challenger becomes champion.
    pub promote: bool,
    /// Who serves after the round.
    pub serve: Serving,
}

/// Applies the gate rule (module docs) to scores.
pub fn decide(challenger: f32, champion: Option<f32>, baselines: &[(Serving, f32)]) -> Decision {
    let best = baselines
        .iter()
        .filter(|(_, s)| s.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .copied();
    let best_score = best.map_or(f32::INFINITY, |b| b.1);
    let champ_score = champion.filter(|s| s.is_finite()).unwrap_or(f32::INFINITY);
    let promote = challenger.is_finite() && challenger < champ_score && challenger < best_score;
    let model_score = if promote { challenger } else { champ_score };
    let serve = match best {
        Some((kind, s)) if s <= model_score => kind,
        _ if model_score.is_finite() => Serving::Recurrent,
        _ => Serving::Ewma,
    };
    Decision {
        challenger,
        champion,
        baselines: baselines.to_vec(),
        promote,
        serve,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn promotes_only_a_better_challenger() {
        let b = [(Serving::Ewma, 1.0), (Serving::Histogram, 0.8)];
        let d = decide(0.7, Some(0.75), &b);
        assert!(d.promote);
        assert_eq!(d.serve, Serving::Recurrent);
        let d = decide(0.79, Some(0.6), &b);
        assert!(!d.promote);
        assert_eq!(d.serve, Serving::Recurrent);
        let d = decide(0.85, None, &b);
        assert!(!d.promote);
        assert_eq!(d.serve, Serving::Histogram);
        let d = decide(f32::NAN, None, &b);
        assert!(!d.promote);
    }

    proptest! {
        #[test]
        fn never_promotes_a_worse_model(
            ch in proptest::num::f32::ANY,
            champ in proptest::option::of(proptest::num::f32::ANY),
            e in proptest::num::f32::ANY,
            h in proptest::num::f32::ANY,
        ) {
            let d = decide(ch, champ, &[(Serving::Ewma, e), (Serving::Histogram, h)]);
            if d.promote {
                prop_assert!(ch.is_finite());
                if let Some(c) = champ { if c.is_finite() { prop_assert!(ch < c); } }
                if e.is_finite() { prop_assert!(ch < e); }
                if h.is_finite() { prop_assert!(ch < h); }
            }
        }
    }
}
