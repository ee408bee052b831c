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
    /// Run only the transcode consumers (`transcode.workers` of them, at
    /// least one), on the same database and storage as `serve`.
    Worker,
    /// Bring the database schema up to date and exit.
    Migrate,
    /// Queue a transcode of every ready video whose published renditions
    /// were made by an older ladder (see ARCHITECTURE.md, "What the ladder
    /// guarantees"); the running daemons' workers take the jobs, and the
    /// old renditions are served until the new ones replace them.
    RequeueOutdated {
        /// Only list them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Copy this installation's objects and media from the storage root to
    /// the S3 bucket of `storage.s3.*`, each checked by BLAKE3 once there.
    /// Run again after an interruption, it copies only what is missing;
    /// then set `storage.backend = "s3"`.
    MigrateStore {
        /// Where to: only `s3`.
        #[arg(long, value_parser = ["s3"])]
        to: String,
    },
    /// Upload a file through the chunked API, in parallel, resuming where a
    /// previous run of the same file stopped.
    Upload {
        file: PathBuf,
        /// The vidcache server.
        #[arg(long, default_value = "http://127.0.0.1:8020")]
        server: String,
        /// Chunks in flight at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Chunk size in bytes for a new upload.
        #[arg(long, default_value_t = 8 << 20)]
        chunk_size: u64,
        /// Where upload ids are remembered for resuming.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// No progress bar (scripts, tests).
        #[arg(long)]
        quiet: bool,
    },
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Upload { file, server, parallel, chunk_size, state_dir, quiet } = cli.command {
        let args = vidcache::client::UploadArgs {
            file,
            server,
            parallel,
            chunk_size,
            state_dir: state_dir.unwrap_or_else(vidcache::client::default_state_dir),
            progress: !quiet,
        };
        let summary = vidcache::client::upload(args).await?;
        println!("{summary}");
        return Ok(());
    }
    let settings = Settings::load(cli.config.as_deref())?;
    // Only where uploads arrive: a `worker` only transcodes, and the fixed
    // mmap threshold costs a 1080p ladder about 9 % (mmap churn on the
    // source's large packets; BENCHMARKS.md, "Transcoding ... issue 17").
    if matches!(cli.command, Command::Serve) {
        tune_allocator();
    }
    init_tracing(&settings.log.filter, settings.log.format == "json");
    match cli.command {
        Command::Serve => Application::build(settings).await?.run_until_stopped().await?,
        Command::Worker => vidcache::startup::run_worker(settings).await?,
        Command::Migrate => {
            // The default SQLite file lives in the storage root; make sure it exists.
            #[allow(clippy::disallowed_methods)] // a one-shot command, nothing else runs
            std::fs::create_dir_all(&settings.storage.root)?;
            vidcache::storage::Repository::connect(&settings.database.url, 1).await?;
            tracing::info!("database schema is up to date");
        }
        Command::RequeueOutdated { dry_run } => {
            let (outdated, queued) = vidcache::transcode::requeue_outdated(&settings, dry_run).await?;
            println!("{} outdated, {queued} queued", outdated.len());
            for (hash, version) in outdated {
                println!("{hash} ladder v{version}");
            }
        }
        Command::MigrateStore { to: _ } => {
            let report = vidcache::storage::migrate_to_s3(&settings, &mut |line| println!("{line}")).await?;
            println!("{report}");
        }
        Command::Upload { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// glibc's allocator, left alone, gives every thread that allocates an arena
/// of its own and raises its mmap threshold after large frees, so the
/// daemon's many blocking threads (one per body being written) each keep
/// megabytes of freed 256 KiB-1 MiB blocks. Two arenas and a fixed threshold
/// make those blocks go back to the kernel when freed: resident memory then
/// follows the bytes in flight, not the history of uploads.
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it is called once,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
