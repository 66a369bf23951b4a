//! `thrive`: study what happens when models learn from data that earlier models made.
//!
//! A thin binary over the library crates: it parses flags, sets up logging and
//! threads, calls one library entry point per subcommand and turns typed
//! errors into messages and a non-zero exit.

mod cmd;
#[cfg(test)]
mod readme_commands;

// Training allocates and frees tensors of hundreds of megabytes many times a step; glibc's
// malloc hands each back to the kernel, and faulting the pages in again took a quarter of a
// LoRA step's time (perf). mimalloc keeps them for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::sync::LazyLock;

/// The version and what this binary was built with: the CPU's matrix kernel and CUDA.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} (CPU matmul: {}; CUDA: {})",
        env!("CARGO_PKG_VERSION"),
        thrive_sft::matmul::cpu_backend(),
        if cfg!(feature = "cuda") { "yes" } else { "no" }
    )
});

#[derive(Parser)]
#[command(
    name = "thrive",
    version = VERSION.as_str(),
    about = "Model collapse and its avoidance: Gaussian, KDE, linear-regression, discrete and language-model settings"
)]
struct Cli {
    /// Worker threads for parallel work (default: all cores, divided among the steps of
    /// `run --jobs` and `demo --jobs`). Results do not depend on it.
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Log filter, e.g. `info`, `debug`, `thrive=trace` (or set RUST_LOG).
    #[arg(long, global = true, default_value = "info")]
    log: String,
    /// Colour the log: `auto` (only when stderr is a terminal and NO_COLOR is unset), `always`, `never`.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto, value_name = "WHEN")]
    color: Color,
    #[command(subcommand)]
    command: Command,
}

/// When the log on stderr is coloured.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

impl Color {
    /// An explicit `always`/`never` wins; then a set, non-empty NO_COLOR (no-color.org); then
    /// whether stderr is a terminal, so a log file or pipe gets plain text.
    fn ansi(self) -> bool {
        use std::io::IsTerminal as _;
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// The embedded demo: every workflow for a few generations of a tiny Gemma 2, on CPU, offline.
    Demo(cmd::demo::Args),
    /// Fit and resample multivariate Gaussians (docs/protocol.md §2).
    Gaussian(cmd::gaussian::Args),
    /// Fit and resample kernel density estimates (docs/protocol.md §3).
    Kde(cmd::kde::Args),
    /// Fit and relabel minimum-norm linear regressions (protocol §6).
    Linreg(cmd::linreg::Args),
    /// Fit and resample discrete distributions until one outcome is left (protocol §7).
    Discrete(cmd::discrete::Args),
    /// Import, inspect and export the data pool of a language-model run.
    #[command(subcommand)]
    Pool(cmd::pool::Command),
    /// Fine-tune one generation's language model (LoRA or full).
    Sft(cmd::sft::Args),
    /// Sample one generation's synthetic data into the pool.
    Sample(cmd::sample::Args),
    /// Continue a few prompts with a model and print the text.
    Generate(cmd::sample::GenerateArgs),
    /// Run (or continue) a multi-generation language-model run from a run file.
    Run(cmd::run::Args),
    /// Submit a run's steps as Slurm jobs (sbatch): one job per step, arrays of value-grid cells,
    /// afterok dependencies; only what is neither done nor running.
    Submit(cmd::submit::Args),
    /// What a run directory has done and what is left.
    Status(cmd::status::Args),
    /// Draw figures and a summary table from a results file.
    Report(cmd::report::Args),
    /// Compare a device against the CPU on small models: logits, loss, LoRA gradients, greedy
    /// tokens (scripts/device-check.sh).
    CheckDevice(cmd::check_device::Args),
}

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_e` in the v2 and v3 headers that
/// libmimalloc-sys builds).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Never hand freed memory back to the kernel: a training step frees and reallocates buffers
    // of hundreds of megabytes, and the kernel zeroing them again on every first touch took 15 %
    // of a LoRA step (perf); keeping them took 5-10 % off the step for 2 % more peak memory.
    // SAFETY: a plain integer option, set before this program starts any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(cli.color.ansi())
        .with_target(false)
        .init();
    // Steps run N at a time share the cores: each gets its share, unless --threads says otherwise
    // (on 2 cores the demo runs 1.8x faster as 2 one-thread jobs than as 1 two-thread job).
    let jobs = match &cli.command {
        Command::Run(a) => a.jobs(),
        Command::Demo(a) => a.jobs(),
        _ => 1,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cli.threads.or((jobs > 1).then(|| (cores / jobs).max(1)));
    if let Some(threads) = threads {
        // candle's CPU matmul sizes its parallelism from RAYON_NUM_THREADS, not from rayon's
        // pool; set before any thread exists.
        std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string());
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build_global() {
            eprintln!("error: --threads: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Gaussian(args) => cmd::gaussian::run(args),
        Command::Kde(args) => cmd::kde::run(args),
        Command::Linreg(args) => cmd::linreg::run(args),
        Command::Discrete(args) => cmd::discrete::run(args),
        Command::Pool(command) => cmd::pool::run(command),
        Command::Sft(args) => cmd::sft::run(args),
        Command::Sample(args) => cmd::sample::run(args),
        Command::Generate(args) => cmd::sample::generate(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Submit(args) => cmd::submit::run(args),
        Command::Status(args) => cmd::status::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::CheckDevice(args) => cmd::check_device::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
