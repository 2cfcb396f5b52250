//! The wasim command line: parse, validate, dispatch. No simulation logic lives here.

mod children;
mod cli;
mod fuzz;
mod huge;
mod multi;

use std::process::ExitCode;

fn main() -> ExitCode {
    huge::ask_for_huge_pages();
    cli::main()
}
