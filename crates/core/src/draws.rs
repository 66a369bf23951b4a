//! Filtered sampling: the count of draws a generation made ([`Draws`], recorded as
//! [`DRAW_METRICS`]) and the one rejection-draw loop ([`draw_until_filled`]) behind every toy
//! setting's truncation and verifier, capped by the knobs' `max_draws`.

use crate::error::Result;
use crate::knobs::Knobs;

/// Draws a generation's sampling made and samples it kept (selection and truncation redraw).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Draws {
    /// Draws made.
    pub made: usize,
    /// Samples kept.
    pub kept: usize,
}

impl Draws {
    /// Counts `made` more draws of which `kept` were kept.
    pub fn add(&mut self, made: usize, kept: usize) {
        self.made += made;
        self.kept += kept;
    }
}

/// Columns a chain appends to the setting's metrics when [`crate::ChainConfig::record_draws`] is set:
/// the draws that made generation t's synthetic training batch and how many of them the filters
/// rejected (0 at generation 1, which trains on real data).
pub const DRAW_METRICS: [&str; 2] = ["synthetic_draws", "rejected_draws"];

/// Draws until `n` examples pass the knobs' filters, at most [`Knobs::draw_limit`] draws, and
/// adds the draws made to `total`. `draw(kept)` makes one draw for the example at index `kept`
/// (the number kept so far): it keeps the draw and returns `true` if it passes, else `false`.
/// A batch the limit cannot fill is [`Knobs::unfilled`]'s error, with `total` untouched.
///
/// The random stream is `draw`'s alone, one call per draw in order, so a setting's draws are
/// those of its own loop written out.
pub fn draw_until_filled(
    knobs: &Knobs,
    n: usize,
    total: &mut Draws,
    mut draw: impl FnMut(usize) -> bool,
) -> Result<()> {
    let limit = knobs.draw_limit(n);
    let (mut made, mut kept) = (0, 0);
    while kept < n {
        if made == limit {
            return Err(knobs.unfilled(kept, n, made));
        }
        made += 1;
        if draw(kept) {
            kept += 1;
        }
    }
    total.add(made, n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_until_filled_or_the_limit() {
        let knobs = Knobs { truncate: 1.0, max_draws: 2.0, ..Knobs::PAPER };
        let mut total = Draws::default();
        let mut calls = Vec::new();
        // Every other draw passes: 3 examples take 6 draws, indices 0, 0, 1, 1, 2, 2.
        draw_until_filled(&knobs, 3, &mut total, |i| {
            calls.push(i);
            calls.len() % 2 == 0
        })
        .unwrap();
        assert_eq!(calls, [0, 0, 1, 1, 2, 2]);
        assert_eq!(total, Draws { made: 6, kept: 3 });
        // Nothing passes: 2·3 draws, then the error names the filter; the count stays.
        let err = draw_until_filled(&knobs, 3, &mut total, |_| false).unwrap_err().to_string();
        assert!(err.contains("kept only 0 of 3 samples in 6 draws"), "{err}");
        assert_eq!(total, Draws { made: 6, kept: 3 });
    }
}
