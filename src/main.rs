//! The wasim command line: parse, validate, dispatch. No simulation logic lives here.

mod children;
mod cli;
mod fuzz;
mod multi;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
