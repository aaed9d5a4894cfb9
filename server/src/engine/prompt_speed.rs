//! What reading a prompt costs one model on this machine, learnt from the
//! prompts it has read. kinko uses it to keep a prompt within the
//! first-token timeout (trimming the history, as the window does), and the
//! UI shows it beside the context size.
//!
//! The fit is `seconds = a·n + b·n²` (the square is attention over the
//! prompt; on a CPU it dominates long prompts), least squares of `seconds/n`
//! against `n` over the latest prompts. A prompt that did not finish (its
//! engine was stopped) proves the cost is at least that high; the estimate
//! is scaled up until it agrees with every such proof.

use app::api::PromptCost;
use std::collections::VecDeque;

/// Prompts remembered per model.
const KEEP: usize = 64;
/// Prompts shorter than this say little about the cost of long ones.
const MIN_TOKENS: usize = 8;

/// The prompt timings of one model.
#[derive(Debug, Clone, Default)]
pub struct PromptSpeed {
    /// Finished prompts: tokens, seconds.
    finished: VecDeque<(usize, f64)>,
    /// Prompts stopped unfinished: tokens, seconds they had run.
    unfinished: VecDeque<(usize, f64)>,
}

impl PromptSpeed {
    /// A prompt of `tokens` tokens was read in `seconds`.
    pub fn record(&mut self, tokens: usize, seconds: f64) {
        if tokens < MIN_TOKENS || !(seconds.is_finite() && seconds > 0.0) {
            return;
        }
        if self.finished.len() == KEEP {
            self.finished.pop_front();
        }
        self.finished.push_back((tokens, seconds));
        // A finished prompt at least as long, read faster, supersedes a
        // proof of slowness (the machine was busier then).
        self.unfinished
            .retain(|&(n, s)| !(tokens >= n && seconds < s));
    }

    /// A prompt of `tokens` tokens was still being read after `seconds`.
    pub fn record_unfinished(&mut self, tokens: usize, seconds: f64) {
        if tokens < MIN_TOKENS || !(seconds.is_finite() && seconds > 0.0) {
            return;
        }
        if self.unfinished.len() == KEEP {
            self.unfinished.pop_front();
        }
        self.unfinished.push_back((tokens, seconds));
    }

    /// The estimate, once at least one prompt has finished or failed to.
    pub fn estimate(&self) -> Option<PromptCost> {
        let samples = self.finished.len() + self.unfinished.len();
        // With no finished prompt, the unfinished ones (lower bounds) are
        // the best estimate there is.
        let basis = if self.finished.is_empty() {
            &self.unfinished
        } else {
            &self.finished
        };
        let (mut a, mut b) = fit(basis)?;
        // Every unfinished prompt took longer than the estimate may say.
        let scale = self
            .unfinished
            .iter()
            .map(|&(n, s)| {
                let est = a * n as f64 + b * (n as f64).powi(2);
                if est > 0.0 {
                    s / est
                } else {
                    f64::INFINITY
                }
            })
            .fold(1.0_f64, f64::max);
        if scale.is_finite() {
            a *= scale;
            b *= scale;
        }
        let longest = self
            .finished
            .iter()
            .chain(&self.unfinished)
            .map(|&(n, _)| n)
            .max()
            .unwrap_or(0);
        Some(PromptCost {
            per_token: a,
            per_token_squared: b,
            samples,
            longest,
        })
        .filter(|c| c.per_token.is_finite() && c.per_token_squared.is_finite())
    }
}

/// Least squares of `s/n = a + b·n`; with too little spread in `n` for a
/// slope, a line through the origin (`b = 0`).
fn fit(points: &VecDeque<(usize, f64)>) -> Option<(f64, f64)> {
    if points.is_empty() {
        return None;
    }
    let k = points.len() as f64;
    let total_n: f64 = points.iter().map(|p| p.0 as f64).sum();
    let total_s: f64 = points.iter().map(|p| p.1).sum();
    let linear = (total_s / total_n, 0.0);
    let (min_n, max_n) = points
        .iter()
        .fold((usize::MAX, 0), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    if points.len() < 2 || (max_n as f64) < 1.5 * min_n as f64 {
        return Some(linear);
    }
    let xs: Vec<f64> = points.iter().map(|p| p.0 as f64).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.1 / p.0 as f64).collect();
    let mx = xs.iter().sum::<f64>() / k;
    let my = ys.iter().sum::<f64>() / k;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx <= 0.0 {
        return Some(linear);
    }
    let b = sxy / sxx;
    let a = my - b * mx;
    if b < 0.0 {
        return Some(linear);
    }
    if a < 0.0 {
        // All of it in the square term: b through the origin.
        let b0 = points
            .iter()
            .map(|&(n, s)| s * (n as f64).powi(2))
            .sum::<f64>()
            / points.iter().map(|&(n, _)| (n as f64).powi(4)).sum::<f64>();
        return Some((0.0, b0));
    }
    Some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The costs measured on this project's machine for SmolLM2-135M
    /// (issue 9): 416 tokens in 4.1 s, 1,992 in 38.2 s.
    fn measured() -> PromptSpeed {
        let mut p = PromptSpeed::default();
        p.record(416, 4.1);
        p.record(1992, 38.2);
        p
    }

    #[test]
    fn nothing_known_until_a_prompt_is_timed() {
        let mut p = PromptSpeed::default();
        assert_eq!(p.estimate(), None);
        p.record(3, 0.1);
        assert_eq!(p.estimate(), None, "too short to say anything");
        p.record(100, 0.5);
        let c = p.estimate().unwrap();
        assert!((c.seconds(100) - 0.5).abs() < 1e-9);
        assert_eq!(c.per_token_squared, 0.0, "one size: no slope yet");
        assert_eq!(c.longest, 100);
        assert!(!c.is_lower_bound(200) && c.is_lower_bound(201), "{c:?}");
    }

    #[test]
    fn two_sizes_give_the_square_term() {
        let c = measured().estimate().unwrap();
        assert!((c.seconds(416) - 4.1).abs() < 1e-6, "{c:?}");
        assert!((c.seconds(1992) - 38.2).abs() < 1e-6, "{c:?}");
        assert!(c.per_token_squared > 0.0);
        assert!(!c.is_lower_bound(8090), "a square term is known");
        // The 8k prompt of the issue: several minutes.
        assert!(c.seconds(8090) > 300.0, "{}", c.seconds(8090));
        let n = c.tokens_within(38.2);
        assert!((1990..=1992).contains(&n), "{n}");
    }

    #[test]
    fn an_unfinished_prompt_raises_the_estimate() {
        let mut p = PromptSpeed::default();
        p.record(100, 1.0);
        assert!(p.estimate().unwrap().seconds(2000) < 25.0);
        p.record_unfinished(2000, 120.0);
        let c = p.estimate().unwrap();
        assert!(c.seconds(2000) >= 120.0 - 1e-9, "{c:?}");
        assert!(c.tokens_within(96.0) < 2000);
        // A faster finished prompt of that size supersedes the proof.
        p.record(2000, 30.0);
        assert!(p.estimate().unwrap().seconds(2000) < 120.0);
    }

    #[test]
    fn unfinished_prompts_alone_are_a_lower_bound() {
        let mut p = PromptSpeed::default();
        p.record_unfinished(8000, 120.0);
        let c = p.estimate().unwrap();
        assert!(c.seconds(8000) >= 120.0 - 1e-9);
    }

    #[test]
    fn tokens_within_inverts_seconds() {
        for c in [
            PromptCost {
                per_token: 0.01,
                per_token_squared: 0.0,
                samples: 1,
                longest: 100,
            },
            PromptCost {
                per_token: 0.007,
                per_token_squared: 6e-6,
                samples: 2,
                longest: 2000,
            },
        ] {
            for secs in [1.0, 10.0, 96.0] {
                let n = c.tokens_within(secs);
                assert!(c.seconds(n) <= secs + 1e-9);
                assert!(c.seconds(n + 1) > secs);
            }
        }
    }
}
