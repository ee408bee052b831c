//! The `vidcache` binary: load settings, start telemetry, run a command.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use vidcache::config::Settings;
use vidcache::startup::Application;
use vidcache::telemetry::init_tracing;

#[derive(Parser)]
#[command(name = "vidcache", version, about = "Video ingest, dedup and streaming daemon")]
struct Cli {
    /// TOML settings file (defaults, then this file, then VIDCACHE__SECTION__KEY variables).
    #[arg(long, global = true, env = "VIDCACHE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (runs migrations first).
    Serve,
    /// Bring the database schema up to date and exit.
    Migrate,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    init_tracing(&settings.log.filter, settings.log.format == "json");
    match cli.command {
        Command::Serve => Application::build(settings).await?.run_until_stopped().await?,
        Command::Migrate => {
            // The default SQLite file lives in the storage root; make sure it exists.
            std::fs::create_dir_all(&settings.storage.root)?;
            vidcache::storage::Repository::connect(&settings.database.url, 1).await?;
            tracing::info!("database schema is up to date");
        }
    }
    Ok(())
}
