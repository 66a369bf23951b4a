//! One module per subcommand: flags and the call into the library crate.

pub mod check_device;
pub mod common;
pub mod demo;
mod demo_assets;
pub mod discrete;
pub mod gaussian;
pub mod kde;
pub mod linreg;
pub mod output;
pub mod pool;
pub mod report;
pub mod run;
pub mod sample;
pub mod sft;
pub mod status;
mod steps;
pub mod submit;
