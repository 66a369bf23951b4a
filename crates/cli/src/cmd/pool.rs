//! `thrive pool` (in progress).

#[derive(clap::Subcommand)]
pub enum Command {
    /// Import real data into a pool.
    Import,
}

pub fn run(_command: Command) -> anyhow::Result<()> {
    anyhow::bail!("`thrive pool` is not built yet")
}
