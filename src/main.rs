//! The `engagement-ingest` binary: parses arguments, sets up logging, calls the library and maps
//! outcomes to exit codes (0 ok, 1 some batches failed, 2 usage/config/inventory, 3 fatal).

use std::process::ExitCode;

use clap::Parser;
use engagement_ingest::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(&cli);
    cli::raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(cli::dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}
