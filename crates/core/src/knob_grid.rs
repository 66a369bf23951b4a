//! A grid of loop knobs: a list of values per knob ([`crate::knobs`]), every combination one
//! cell, expanded over a grid's run specs.

use crate::chain::Setting;
use crate::draws::DRAW_METRICS;
use crate::error::{Error, Result};
use crate::grid::RunSpec;
use crate::knobs::{Knobs, KNOB_NAMES};
use crate::workflow::Workflow;

/// A list of values per knob: every combination is one cell of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct KnobGrid {
    /// `(knob name, values)` in [`KNOB_NAMES`] order.
    axes: Vec<(&'static str, Vec<f64>)>,
}

impl Default for KnobGrid {
    fn default() -> Self {
        KnobGrid { axes: KNOB_NAMES.iter().map(|&k| (k, vec![Knobs::PAPER.get(k)])).collect() }
    }
}

impl KnobGrid {
    /// Sets the values of one knob (a list is an axis); an empty list keeps the default.
    pub fn with(mut self, name: &str, values: Vec<f64>) -> Result<Self> {
        let axis = self
            .axes
            .iter_mut()
            .find(|(k, _)| *k == name)
            .ok_or_else(|| Error::invalid(name.replace('_', "-"), "is no loop knob"))?;
        if !values.is_empty() {
            for (i, v) in values.iter().enumerate() {
                if values[..i].iter().any(|w| w.to_bits() == v.to_bits()) {
                    return Err(Error::invalid(name.replace('_', "-"), format!("{v} appears twice")));
                }
            }
            axis.1 = values;
        }
        Ok(self)
    }

    /// Every combination, the last knob varying fastest; each one validated.
    pub fn combinations(&self) -> Result<Vec<Knobs>> {
        let mut out = vec![Knobs::PAPER];
        for (name, values) in &self.axes {
            out = out
                .iter()
                .flat_map(|k| {
                    values.iter().map(move |&v| {
                        let mut k = *k;
                        k.set(name, v);
                        k
                    })
                })
                .collect();
        }
        out.iter().try_for_each(Knobs::validate)?;
        Ok(out)
    }

    /// The knobs given a value other than the default anywhere: the results columns.
    pub fn columns(&self) -> Vec<&'static str> {
        self.axes
            .iter()
            .filter(|(k, v)| v.iter().any(|x| x.to_bits() != Knobs::PAPER.get(k).to_bits()))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Whether any cell filters samples (selection or truncation): then every run records
    /// [`DRAW_METRICS`].
    pub fn filters(&self) -> bool {
        self.values("select_threshold").iter().chain(self.values("truncate")).any(|v| v.is_finite())
    }

    /// Metric names of a grid: the setting's, then [`DRAW_METRICS`] when it filters.
    pub fn metric_names(&self, setting: &[&str]) -> Vec<String> {
        let extra: &[&str] = if self.filters() { &DRAW_METRICS } else { &[] };
        setting.iter().chain(extra).map(|s| s.to_string()).collect()
    }

    /// The values of the knob `name`.
    pub fn values(&self, name: &str) -> &[f64] {
        self.axes.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_slice()).unwrap_or(&[])
    }

    /// Every knob's values, for the manifest (∞ written as null).
    pub fn manifest(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> =
            self.axes.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
        serde_json::Value::Object(map)
    }

    /// Notes about knobs that do nothing in part of the grid (e.g. keep-real under Accumulate).
    pub fn notes(&self, workflows: &[Workflow]) -> Vec<String> {
        let mut notes = Vec::new();
        if self.values("keep_real").iter().any(|&p| p > 0.0) && workflows.contains(&Workflow::Accumulate) {
            notes.push(
                "--keep-real has no effect under Accumulate: every real point is already in every training set".into(),
            );
        }
        if self.values("verifier_bias").iter().any(|&b| b != 0.0) && self.values("select_threshold") == [f64::INFINITY]
        {
            notes.push("--verifier-bias has no effect without --select-threshold".into());
        }
        notes
    }

    /// Notes about runs of `specs` whose knobs do nothing (a real weight under Replace with no
    /// real data after generation 1), once per kind.
    pub fn run_notes<S: Setting>(specs: &[RunSpec<'_, S>]) -> Vec<String> {
        let inert = specs.iter().any(|s| {
            let c = &s.config;
            c.workflow == Workflow::Replace
                && c.knobs.weighs_real()
                && c.retained_real == 0
                && !c.knobs.real_inflow(Workflow::Replace, c.n)
        });
        if inert {
            vec!["--real-weight changes nothing under Replace unless real data join later generations \
                  (--keep-real, --fresh-real or --real): generation 1 is real data alone"
                .into()]
        } else {
            Vec::new()
        }
    }

    /// Each spec once per knob combination (specs outer, knobs inner), with the set knobs as
    /// results columns after the spec's own. With every knob at its default it returns the
    /// specs unchanged.
    pub fn expand<'s, S: Setting>(&self, specs: Vec<RunSpec<'s, S>>) -> Result<Vec<RunSpec<'s, S>>> {
        let combos = self.combinations()?;
        let columns = self.columns();
        let mut out = Vec::with_capacity(specs.len() * combos.len());
        for spec in specs {
            for knobs in &combos {
                spec.setting.check_knobs(knobs, spec.config.workflow)?;
                let mut config = spec.config;
                config.knobs = *knobs;
                config.record_draws = self.filters();
                config.validate()?;
                let mut params = spec.params.clone();
                params.0.extend(knobs.params(&columns));
                out.push(RunSpec { setting: spec.setting, params, config, seed: spec.seed, cost: spec.cost });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_columns_and_combinations() {
        let grid = KnobGrid::default().with("keep_real", vec![0.0, 0.1]).unwrap().with("temperature", vec![]).unwrap();
        assert_eq!(grid.columns(), ["keep_real"]);
        assert_eq!(grid.combinations().unwrap().len(), 2);
        assert!(KnobGrid::default().columns().is_empty());
        assert!(KnobGrid::default().with("keep_real", vec![0.1, 0.1]).is_err());
        assert!(KnobGrid::default().with("temperature", vec![-1.0]).unwrap().combinations().is_err());
    }
}
