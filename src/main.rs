//! Wiring only: parse the command line and run the chosen command.

use std::process::ExitCode;

use pod_identity_webhook::cli::{self, Command};

fn main() -> ExitCode {
    match cli::parse_or_exit(std::env::args_os()).into_command() {
        Command::Mutate(args) => pod_identity_webhook::offline::run(args),
        Command::Serve(_) => {
            eprintln!("error: the server is not wired yet");
            ExitCode::from(2)
        }
    }
}
