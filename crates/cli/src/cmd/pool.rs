//! `thrive pool`: import real data into a pool, inspect a pool, export any batch or training set.

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use thrive_core::Workflow;
use thrive_pool::{
    import_file, BatchKey, ColumnMapping, Example, ExportFormat, HubSource, LengthFilter, Origin, Pool, PoolWriter,
    TokenCounter, View,
};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Import real data into a pool (created if missing): HelpSteer2 from a folder or the Hub, or any jsonl/Parquet file.
    Import(ImportArgs),
    /// Show a pool: schema, rows and token lengths per batch, sample rows, the lineage of an example.
    Inspect(InspectArgs),
    /// Write one batch, or the training set of a generation, as jsonl or Parquet.
    Export(ExportArgs),
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// Pool directory.
    dir: PathBuf,
    /// HelpSteer2 from a local folder holding <split>.jsonl.gz, .jsonl or .parquet.
    #[arg(long, conflicts_with_all = ["hub", "file"])]
    helpsteer2: Option<PathBuf>,
    /// HelpSteer2 from the Hugging Face Hub (needs network; HF_TOKEN and the hf-hub cache apply).
    #[arg(long, num_args = 0..=1, default_missing_value = "nvidia/HelpSteer2", conflicts_with = "file")]
    hub: Option<String>,
    /// Any .jsonl, .jsonl.gz or .parquet file of (prompt, response) rows.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Splits to import [HelpSteer2: train,validation; --file: train (one split)].
    #[arg(long)]
    split: Option<String>,
    /// Dataset name stored with each row [default: helpsteer2, or the file's name].
    #[arg(long)]
    dataset: Option<String>,
    /// Input column holding the prompt.
    #[arg(long, default_value = "prompt")]
    prompt_column: String,
    /// Input column holding the response.
    #[arg(long, default_value = "response")]
    response_column: String,
    /// tokenizer.json of the model to be fine-tuned: stores each row's token count for length filters.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Print what was imported as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// Pool directory.
    dir: PathBuf,
    /// Sample rows shown from the real data and from the newest synthetic batch.
    #[arg(long, default_value_t = 2)]
    samples: usize,
    /// Trace this example_id back to the model and data that produced it.
    #[arg(long)]
    lineage: Option<String>,
    /// Also read every file in full: hashes, row counts, duplicate example_ids.
    #[arg(long)]
    verify: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Pool directory.
    dir: PathBuf,
    /// Generation: 0 is the real data; k is what generation k's model sampled.
    #[arg(long)]
    generation: u32,
    /// Workflow of the chain (needed when the pool holds more than one).
    #[arg(long)]
    workflow: Option<Workflow>,
    /// Chain seed (needed when the pool holds more than one chain).
    #[arg(long)]
    chain: Option<u64>,
    /// Real split, for --generation 0.
    #[arg(long, default_value = "train")]
    split: String,
    /// Export what generation --generation trains on (its workflow's view) instead of one batch.
    #[arg(long)]
    training: bool,
    /// Drop rows whose training text has more tokens than this (the paper: 512).
    #[arg(long)]
    max_tokens: Option<u32>,
    /// jsonl or parquet [default: from --out's extension, else jsonl].
    #[arg(long)]
    format: Option<String>,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Import(a) => import(a),
        Command::Inspect(a) => inspect(a),
        Command::Export(a) => export(a),
    }
}

fn import(a: ImportArgs) -> Result<()> {
    let counter = a.tokenizer.as_deref().map(TokenCounter::from_file).transpose().context("--tokenizer")?;
    let mapping = ColumnMapping { prompt: a.prompt_column.clone(), response: a.response_column.clone() };
    // (file, dataset, split) to import.
    let mut inputs: Vec<(PathBuf, String, String)> = Vec::new();
    if let Some(file) = &a.file {
        let split = a.split.clone().unwrap_or_else(|| "train".into());
        if split.contains(',') {
            bail!("--split: one split per --file (got `{split}`)");
        }
        let dataset = a.dataset.clone().unwrap_or_else(|| file_stem(file));
        inputs.push((file.clone(), dataset, split));
    } else {
        let source = match (&a.helpsteer2, &a.hub) {
            (Some(dir), None) => HubSource::Local(dir.clone()),
            (None, Some(repo)) => HubSource::Hub { repo: repo.clone() },
            _ => bail!("say what to import: --helpsteer2 FOLDER, --hub [REPO] or --file FILE"),
        };
        let dataset = a.dataset.clone().unwrap_or_else(|| "helpsteer2".into());
        for split in a.split.as_deref().unwrap_or("train,validation").split(',').map(str::trim) {
            let file = source.split_file(split)?;
            inputs.push((file, dataset.clone(), split.to_string()));
        }
    }
    // Read and check everything before the pool is touched.
    let mut batches = Vec::new();
    for (file, dataset, split) in &inputs {
        let mut rows = import_file(file, &mapping, dataset, split)?;
        if let Some(c) = &counter {
            c.annotate(&mut rows).with_context(|| format!("counting tokens of {}", file.display()))?;
        }
        tracing::info!("read {} rows from {}", rows.len(), file.display());
        batches.push((BatchKey::real(split), rows, file));
    }
    let mut writer = PoolWriter::open(&a.dir)?;
    let mut report = Vec::new();
    for (key, rows, file) in &batches {
        let entry = writer.write_batch(key, rows)?;
        report.push(json!({"split": key.to_string(), "from": file, "rows": entry.rows, "file": entry.path,
                           "tokens": entry.tokens}));
        if !a.json {
            println!("{key}: {} rows from {} -> {}", entry.rows, file.display(), a.dir.join(&entry.path).display());
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json!({"pool": a.dir, "imported": report}))?);
    }
    Ok(())
}

fn file_stem(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("data");
    name.split('.').next().unwrap_or(name).to_string()
}

fn inspect(a: InspectArgs) -> Result<()> {
    let pool = Pool::open(&a.dir)?;
    if a.verify {
        pool.verify()?;
    }
    let summary = pool.summary()?;
    let real = BatchKey::real("train");
    let newest = pool.manifest().files.iter().filter(|f| matches!(f.key, BatchKey::Synthetic { .. })).max_by_key(|f| {
        let BatchKey::Synthetic { generation, .. } = f.key else { unreachable!() };
        generation
    });
    let mut samples: Vec<Example> = Vec::new();
    if a.samples > 0 {
        if pool.contains(&real) {
            samples.extend(pool.head(&real, a.samples)?);
        }
        if let Some(f) = newest {
            samples.extend(pool.head(&f.key, a.samples)?);
        }
    }
    let lineage = a.lineage.as_deref().map(|id| pool.lineage(id)).transpose()?;
    if a.json {
        let out = json!({
            "summary": summary,
            "samples": samples.iter().map(example_json).collect::<Vec<_>>(),
            "lineage": lineage.as_ref().map(|l| json!({
                "example": example_json(&l.example),
                "file": l.file,
                "model_trained_on": l.model_trained_on.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            })),
            "verified": a.verify,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("pool {} (schema version {})", summary.dir, summary.schema_version);
    let cols: Vec<String> = summary.schema.iter().map(|(n, t)| format!("{n}: {t}")).collect();
    println!("columns: {}", wrap(&cols.join(", "), 100, "  "));
    println!();
    println!(
        "{:<16} {:<21} {:>6} {:>4} {:>10} {:>9}  {:>28} {:>6}",
        "source", "workflow", "chain", "gen", "rows", "MB", "tokens min/med/p95/max mean", ">512"
    );
    for b in &summary.batches {
        let (source, workflow, chain, generation) = match &b.entry.key {
            BatchKey::Real { split } => (format!("real/{split}"), "-".to_string(), "-".to_string(), 0),
            BatchKey::Synthetic { workflow, chain, generation } => {
                ("synthetic".into(), workflow.clone(), chain.to_string(), *generation)
            }
        };
        let (tokens, over) = match &b.tokens_summary {
            Some(t) => (format!("{}/{}/{}/{} {:.1}", t.min, t.median, t.p95, t.max, t.mean), t.over_512.to_string()),
            None => ("(no tokenizer)".into(), "-".into()),
        };
        println!(
            "{source:<16} {workflow:<21} {chain:>6} {generation:>4} {:>10} {:>9.2}  {tokens:>28} {over:>6}",
            b.entry.rows,
            b.entry.bytes as f64 / 1e6
        );
    }
    println!(
        "{} rows, {:.2} MB in {} files",
        summary.total_rows,
        summary.total_bytes as f64 / 1e6,
        summary.batches.len()
    );
    if a.verify {
        println!("verified: every file's hash, row count and example_ids");
    }
    if !samples.is_empty() {
        println!("\nsample rows:");
        for e in &samples {
            println!("  [{}] {}", e.example_id, origin_line(e));
            println!("    prompt:   {}", one_line(&e.prompt, 96));
            println!("    response: {}", one_line(&e.response, 96));
        }
    }
    if let Some(l) = lineage {
        println!("\nlineage of {}:", l.example.example_id);
        println!("  stored in {}", l.file.display());
        println!("  {}", origin_line(&l.example));
        if let Origin::Synthetic { provenance: p, .. } = &l.example.origin {
            println!(
                "  model: {} adapter {} (sha256 {})",
                p.base_model,
                p.adapter_path.as_deref().unwrap_or("-"),
                p.adapter_sha256.as_deref().unwrap_or("-")
            );
            println!(
                "  sampler: temperature {} top-p {} top-k {} max new tokens {} call seed {} sample {}; filter: {}",
                p.temperature,
                p.top_p,
                p.top_k.map_or("-".into(), |k| k.to_string()),
                p.max_new_tokens,
                p.call_seed,
                p.sample_index,
                p.filter
            );
            let data: Vec<String> = l.model_trained_on.iter().map(|k| k.to_string()).collect();
            println!("  that model was fine-tuned on: {}", data.join(" + "));
        }
        println!("  prompt:   {}", one_line(&l.example.prompt, 96));
        println!("  response: {}", one_line(&l.example.response, 96));
    }
    Ok(())
}

fn origin_line(e: &Example) -> String {
    match &e.origin {
        Origin::Real { dataset, row_index, .. } => format!("real {dataset}/{} row {row_index}", e.split),
        Origin::Synthetic { workflow, chain, generation, .. } => {
            format!("synthetic {workflow} chain {chain} generation {generation}")
        }
    }
}

fn example_json(e: &Example) -> serde_json::Value {
    let mut v = json!({"example_id": e.example_id, "split": e.split, "prompt": e.prompt, "response": e.response,
                       "tokens": e.tokens});
    match &e.origin {
        Origin::Real { dataset, row_index, extra } => {
            v["source"] = "real".into();
            v["dataset"] = dataset.as_str().into();
            v["row_index"] = (*row_index).into();
            v["extra"] = extra.as_deref().and_then(|x| serde_json::from_str(x).ok()).unwrap_or(serde_json::Value::Null);
        }
        Origin::Synthetic { workflow, chain, generation, provenance } => {
            v["source"] = "synthetic".into();
            v["workflow"] = workflow.as_str().into();
            v["chain"] = (*chain).into();
            v["generation"] = (*generation).into();
            v["provenance"] = serde_json::to_value(provenance).unwrap_or_default();
        }
    }
    v
}

/// The text on one line, cut to `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c == '\n' { '⏎' } else { c }).collect();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split(' ') {
        if line > 0 && line + word.len() + 1 > width {
            out.push('\n');
            out.push_str(indent);
            line = indent.len();
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

fn export(a: ExportArgs) -> Result<()> {
    let pool = Pool::open(&a.dir)?;
    let format = match a.format.as_deref() {
        Some("jsonl") => ExportFormat::Jsonl,
        Some("parquet") => ExportFormat::Parquet,
        Some(other) => bail!("--format: unknown format `{other}` (expected jsonl or parquet)"),
        None if a.out.extension().is_some_and(|e| e == "parquet") => ExportFormat::Parquet,
        None => ExportFormat::Jsonl,
    };
    let filter = a.max_tokens.map(|max_tokens| LengthFilter { max_tokens });
    let view = if a.generation == 0 && !a.training {
        View::Batch { key: BatchKey::real(&a.split), filter }
    } else {
        let (workflow, chain) = pick_chain(&pool, a.workflow, a.chain)?;
        if a.training {
            let mut v = View::training(workflow, chain, a.generation);
            if let Some(f) = filter {
                v = v.with_filter(f);
            }
            v
        } else {
            View::Batch { key: BatchKey::synthetic(workflow, chain, a.generation), filter }
        }
    };
    let rows = pool.view(&view)?.export(&a.out, format)?;
    println!("wrote {rows} rows to {}", a.out.display());
    Ok(())
}

/// The (workflow, chain) asked for, or the only one the pool holds.
fn pick_chain(pool: &Pool, workflow: Option<Workflow>, chain: Option<u64>) -> Result<(Workflow, u64)> {
    let mut chains: Vec<(String, u64)> = pool
        .manifest()
        .files
        .iter()
        .filter_map(|f| match &f.key {
            BatchKey::Synthetic { workflow: w, chain: c, .. } => Some((w.clone(), *c)),
            BatchKey::Real { .. } => None,
        })
        .filter(|(w, c)| workflow.is_none_or(|x| x.name() == w) && chain.is_none_or(|x| x == *c))
        .collect();
    chains.dedup();
    match (workflow, chain, chains.as_slice()) {
        (Some(w), Some(c), _) => Ok((w, c)),
        (_, _, [(w, c)]) => Ok((w.parse().map_err(|e| anyhow::anyhow!("{e}"))?, *c)),
        (_, _, []) => bail!("{}: no synthetic batches match --workflow/--chain", pool.dir().display()),
        _ => {
            let list: Vec<String> = chains.iter().map(|(w, c)| format!("{w}/{c}")).collect();
            bail!("the pool holds several chains ({}); pick one with --workflow and --chain", list.join(", "))
        }
    }
}
