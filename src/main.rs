use std::process::ExitCode;

use clap::Parser;
use nocobase_mail_operator::cli::{Cli, run};

fn main() -> ExitCode {
    run(Cli::parse())
}
