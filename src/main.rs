//! The wasim command line: parse, validate, dispatch. No simulation logic lives here.

mod cli;
mod fuzz;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
