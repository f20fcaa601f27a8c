//! `puffle`: the server, the operator commands, and a client for the API.

mod client;
mod ops;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "puffle",
    version,
    about = "Self-hostable lead enrichment: server, operator tools and API client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server (opens or creates the database, migrates, bootstraps an empty one).
    Serve(ops::ServeArgs),
    /// Run a worker pool alone (no HTTP API) against the database.
    Worker(ops::WorkerArgs),
    /// Apply database migrations and exit.
    Migrate(ops::DatabaseArgs),
    /// Operator commands that talk to the database directly.
    #[command(subcommand)]
    Admin(ops::AdminCommand),
    #[command(flatten)]
    Client(client::ClientCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => ops::serve(args).await,
        Command::Worker(args) => ops::worker(args).await,
        Command::Migrate(args) => ops::migrate(args).await,
        Command::Admin(cmd) => ops::admin(cmd).await,
        Command::Client(cmd) => client::run(cmd).await,
    }
}
