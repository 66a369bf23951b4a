//! A step of a run's plan as `run --list-steps` and `status` print it in JSON.

use thrive_orchestrator::{SourceId, Step};

/// A source as JSON: its seed and the quality keys the run file sets (null: the default).
fn source_json(source: SourceId) -> serde_json::Value {
    let q = source.quality;
    serde_json::json!({"seed": source.seed, "real": q.real, "epochs": q.epochs, "temperature": q.temperature})
}

/// A step of a run's plan as JSON: its kind and coordinates, then its id and whether it is done
/// (`run --list-steps --json`, `status --json`).
pub(super) fn step_json(step: &Step, done: bool) -> serde_json::Value {
    use serde_json::json;
    let mut v = match *step {
        Step::Train { workflow, chain, generation } => {
            json!({"step": "train", "workflow": workflow.name(), "chain": chain, "generation": generation})
        }
        Step::Sample { workflow, chain, generation } => {
            json!({"step": "sample", "workflow": workflow.name(), "chain": chain, "generation": generation})
        }
        Step::TrainSource { source } => json!({"step": "train-source", "source": source_json(source)}),
        Step::SampleSource { source } => json!({"step": "sample-source", "source": source_json(source)}),
        Step::Cell { num_real, num_synthetic, source, seed } => json!({
            "step": "cell", "num_real": num_real, "num_synthetic": num_synthetic,
            "source": source.map(source_json), "seed": seed
        }),
    };
    v["id"] = json!(step.id());
    v["done"] = json!(done);
    v
}
