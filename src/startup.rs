//! `Application`: wires the store, repository and actors together, binds the
//! listener (port 0 works, and `port()` tells which one was chosen), and runs
//! the HTTP server until it is stopped.

use crate::auth::Auth;
use crate::config::Settings;
use crate::dedup::NearDuplicates;
use crate::domain::UploadId;
use crate::error::ApiError;
use crate::ingest::{Fetcher, KafkaIngest, NetworkGuard};
use crate::media::frames::FrameGrabber;
use crate::media::{Prober, init_ffmpeg};
use crate::queue::Queue;
use crate::routes::{self, AppState};
use crate::storage::{LocalStore, Repository, RootLock, SessionState, Store, UploadKind};
use crate::telemetry::Metrics;
use crate::transcode::{TranscodeWorker, Transcoder};
use crate::upload::{Committer, ProbeSlots, Registry, Uploads};
use actix::{Actor, SyncArbiter};
use actix_web::body::EitherBody;
use actix_web::dev::{Server, Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{App, HttpServer, ResponseError, web};
use anyhow::Context as _;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Threads that probe finished uploads with ffmpeg.
const PROBE_THREADS: usize = 2;
/// Threads decoding frames for the frames API.
const FRAME_THREADS: usize = 2;

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    _lock: RootLock,
    /// Transcode consumers: drained when the server stops.
    consumers: Vec<tokio::task::JoinHandle<()>>,
    drain: crate::queue::Drain,
    drain_limit: std::time::Duration,
    /// Relays, tails and sweeps; stopped with the application.
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts `transcode.workers` transcode consumers on a SyncArbiter of as
/// many threads (none when it is 0).
pub fn start_workers(
    settings: &Settings,
    queue: &Queue,
    repo: &Repository,
    store: &Arc<dyn Store>,
    metrics: &Metrics,
    shutdown: crate::queue::Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    if settings.transcode.workers == 0 {
        return Vec::new();
    }
    let worker = TranscodeWorker {
        repo: repo.clone(),
        store: store.clone(),
        events: queue.events().clone(),
        metrics: metrics.clone(),
        transcoder: SyncArbiter::start(settings.transcode.workers, || Transcoder),
        settings: Arc::new(settings.transcode.clone()),
        pace: Default::default(),
    };
    queue.start_workers(Arc::new(worker), shutdown)
}

/// The store of `storage.backend`, with its working directory under
/// `storage.root` (spools, and with a bucket a working copy of objects).
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let root = &settings.storage.root;
    #[allow(clippy::disallowed_methods)] // start-up, before anything is served
    std::fs::create_dir_all(root).with_context(|| format!("creating storage root {}", root.display()))?;
    let local = LocalStore::open(root).with_context(|| format!("opening storage root {}", root.display()))?;
    with_backend(settings, local).await
}

async fn with_backend(settings: &Settings, local: LocalStore) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match settings.storage.backend {
        crate::config::StorageBackend::Local => Arc::new(local),
        crate::config::StorageBackend::S3 => {
            let s3 = &settings.storage.s3;
            let bucket = crate::storage::Bucket::connect(s3)
                .await
                .with_context(|| format!("connecting to bucket {} at {:?}", s3.bucket, s3.endpoint))?;
            tracing::info!(bucket = %s3.bucket, endpoint = %s3.endpoint, "objects and media in S3");
            Arc::new(crate::storage::S3Store::new(local, bucket, s3.working_copy_bytes))
        }
    })
}

/// `vidcache worker`: only the transcode consumers, on the same database
/// and storage root as `serve` (which it does not lock: `serve` owns it).
pub async fn run_worker(settings: Settings) -> anyhow::Result<()> {
    let store = open_store(&settings).await?;
    let repo = Repository::connect(&settings.database.url, settings.database.max_connections)
        .await
        .with_context(|| format!("connecting to the database {}", redact(&settings.database.url)))?;
    init_ffmpeg();
    let metrics = Metrics::new();
    let queue = Queue::connect(repo.clone(), &settings.transcode, &settings.kafka, metrics.clone())
        .await
        .context("connecting to the queue")?;
    let mut settings = settings;
    settings.transcode.workers = settings.transcode.workers.max(1);
    let (drain, shutdown) = crate::queue::Drain::new();
    let tasks = start_workers(&settings, &queue, &repo, &store, &metrics, shutdown);
    tracing::info!(queue = queue.backend(), workers = settings.transcode.workers, "vidcache worker running");
    stop_signal().await?;
    // Jobs in progress finish (within `transcode.drain_secs`); no new one starts.
    drain.run(tasks, std::time::Duration::from_secs(settings.transcode.drain_secs)).await;
    Ok(())
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let root = &settings.storage.root;
        #[allow(clippy::disallowed_methods)] // start-up, before anything is served
        std::fs::create_dir_all(root).with_context(|| format!("creating storage root {}", root.display()))?;
        let lock = RootLock::acquire(root)?;
        let store = LocalStore::open(root).with_context(|| format!("opening storage root {}", root.display()))?;
        let repo = Repository::connect(&settings.database.url, settings.database.max_connections)
            .await
            .with_context(|| format!("connecting to the database {}", redact(&settings.database.url)))?;
        init_ffmpeg();

        let local_store = store.clone();
        let store = with_backend(&settings, store).await?;
        let metrics = Metrics::new();
        let analysis = settings.analysis.clone();
        let prober = SyncArbiter::start(PROBE_THREADS, move || Prober { settings: analysis.clone() });
        let queue = Queue::connect(repo.clone(), &settings.transcode, &settings.kafka, metrics.clone())
            .await
            .context("connecting to the queue")?;
        let near = Arc::new(NearDuplicates::new(&settings.dedup));
        let signatures = near.rebuild(&repo).await.context("reading perceptual signatures")?;
        tracing::info!(videos = signatures, frames = near.frames(), "near-duplicate index built");
        let committer = Committer {
            repo: repo.clone(),
            store: store.clone(),
            prober,
            metrics: metrics.clone(),
            early_probes: ProbeSlots::new(settings.upload.early_probes, settings.analysis.clone()),
            local_copies: crate::upload::LocalCopies::new(settings.upload.reserve_bytes),
            near: near.clone(),
            events: queue.events().clone(),
            transcode: settings.transcode.on_upload.then(|| Arc::new(settings.transcode.clone())),
            job_queued: queue.queued_signal(),
            commit_time: Default::default(),
        };
        // Crash recovery, before the first request: finish interrupted
        // commits, then cut open spools back to their last checkpoint.
        committer.recover_interrupted().await?;
        recover_sessions(&repo, &local_store).await?;
        sweep_orphan_spools(&repo, &local_store).await?;
        let registry = Registry::new(
            committer.clone(),
            settings.session_ttl(),
            Duration::from_secs(settings.upload.sweep_interval_secs.max(1)),
        )
        .start();
        let uploads =
            Uploads::new(registry, committer.clone(), settings.upload.checkpoint_bytes, settings.upload.reserve_bytes)
                .with_claim(Duration::from_secs(settings.upload.claim_secs.max(1)))
                .with_sharing(settings.storage.s3.share_uploads);
        let guard = NetworkGuard::new(settings.ingest.allow_private_networks, &settings.ingest.allow_networks)
            .map_err(anyhow::Error::msg)?;
        let fetcher = Fetcher::new(guard, uploads.clone(), repo.clone(), &settings.ingest)?;
        let (drain, shutdown) = crate::queue::Drain::new();
        let drain_limit = std::time::Duration::from_secs(settings.transcode.drain_secs);
        let consumers = start_workers(&settings, &queue, &repo, &store, &metrics, shutdown);
        let mut background = Vec::new();
        background.push(actix_web::rt::spawn(commit_whole_tus_uploads(repo.clone(), uploads.clone())));
        background.push(actix_web::rt::spawn({
            let committer = committer.clone();
            async move { committer.complete_pending_signatures().await }
        }));
        background.push(actix_web::rt::spawn({
            let committer = committer.clone();
            async move {
                loop {
                    tokio::time::sleep(crate::upload::LOCAL_COPY_SWEEP).await;
                    committer.local_copies.sweep(&committer).await;
                }
            }
        }));
        background.extend(queue.start_relay());
        background.extend(queue.start_event_tail());
        background.extend(
            queue.start_ingest(Arc::new(KafkaIngest { fetcher: fetcher.clone(), events: queue.events().clone() })),
        );
        tracing::info!(queue = queue.backend(), workers = settings.transcode.workers, "queue ready");
        let library = crate::library::Library {
            repo: repo.clone(),
            store: store.clone(),
            near: near.clone(),
            events: queue.events().clone(),
            queue: queue.clone(),
            metrics: metrics.clone(),
        };
        background.extend(library.clone().start_variant_sweep(
            settings.dedup.variant_retention,
            Duration::from_secs(settings.dedup.variant_sweep_secs.max(1)),
        ));
        let auth = Auth::start(&settings.auth, &settings.server.bind, root, &repo).await?;
        background.push(actix_web::rt::spawn({
            let (auth, repo) = (auth.clone(), repo.clone());
            let every = Duration::from_secs(settings.auth.key_refresh_secs.max(1));
            async move {
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = auth.refresh(&repo).await {
                        tracing::warn!(error = %e, "could not reload the API keys; the ring is kept as it was");
                    }
                }
            }
        }));
        let webhooks = crate::webhooks::Webhooks::new(&settings.webhooks, repo.clone());
        let daemon = crate::domain::UploadId::generate();
        background.extend(webhooks.start(queue.events(), &metrics, daemon.as_str()));
        let media_files = Arc::new(crate::storage::MappedFiles::new(
            settings.server.media_map_bytes,
            std::time::Duration::from_secs(1),
        ));
        background.push(media_files.start_sweep());
        let state = web::Data::new(AppState {
            uploads,
            fetcher,
            repo,
            store,
            metrics: metrics.clone(),
            upload_max_bytes: settings.upload.max_bytes,
            auth,
            settings: Arc::new(settings.clone()),
            frames: SyncArbiter::start(FRAME_THREADS, || FrameGrabber),
            near,
            queue,
            library,
            webhooks,
            media_files,
        });

        let listener =
            TcpListener::bind(&settings.server.bind).with_context(|| format!("binding {}", settings.server.bind))?;
        let address = listener.local_addr()?;
        let port = address.port();
        let app_state = state.clone();
        let cors_origins = settings.server.cors_origins.clone();
        let mut server = HttpServer::new(move || {
            let metrics = metrics.clone();
            App::new()
                .app_data(app_state.clone())
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
                .wrap(ErrorHandlers::new().handler(StatusCode::METHOD_NOT_ALLOWED, method_not_allowed))
                .wrap(actix_web::middleware::from_fn(routes::access::guard))
                .wrap_fn(move |req, srv| {
                    let metrics = metrics.clone();
                    let method = req.method().to_string();
                    let started = Instant::now();
                    let response = srv.call(req);
                    async move {
                        let response = response.await?;
                        let route = response.request().match_pattern().unwrap_or_else(|| "unmatched".into());
                        metrics
                            .http_request_duration_seconds
                            .with_label_values(&[method.as_str(), route.as_str(), response.status().as_str()])
                            .observe(started.elapsed().as_secs_f64());
                        Ok(response)
                    }
                })
                .wrap(cors(&cors_origins))
        })
        .shutdown_timeout(10)
        .listen(listener)?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        tracing::info!(port, root = %root.display(), "vidcache listening; upload page at http://{address}/, player at http://{address}/player");
        Ok(Self { port, server: server.run(), state, _lock: lock, consumers, drain, drain_limit, background })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The upload engine, for callers inside the process (tests use it to
    /// run an expiry sweep without waiting).
    pub fn uploads(&self) -> crate::upload::Uploads {
        self.state.uploads.clone()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self { server, _lock, consumers, drain, drain_limit, background, .. } = self;
        let result = server.await;
        // The server has stopped (SIGTERM, SIGINT): transcode jobs in
        // progress finish and are recorded before the process ends.
        drain.run(consumers, drain_limit).await;
        for task in background {
            task.abort();
        }
        drop(_lock);
        result
    }
}

/// CORS for pages on other origins: tus-js-client, Uppy and the multipart
/// door read `Location`, `Upload-Offset` and `ETag`, so those are exposed.
fn cors(origins: &[String]) -> actix_cors::Cors {
    // An origin that is not allowed gets no CORS headers (so its browser
    // refuses the answer), not an error: same-origin pages send `Origin` too.
    let base = actix_cors::Cors::default().block_on_origin_mismatch(false);
    if origins.is_empty() {
        return base;
    }
    let mut cors = base
        .allow_any_method()
        .allow_any_header()
        .expose_headers([
            "location",
            "upload-offset",
            "upload-length",
            "upload-expires",
            "upload-metadata",
            "tus-resumable",
            "tus-version",
            "tus-extension",
            "tus-max-size",
            "tus-checksum-algorithm",
            "etag",
            "content-range",
            "accept-ranges",
            "content-length",
        ])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin();
    } else {
        for origin in origins {
            cors = cors.allowed_origin(origin);
        }
    }
    cors
}

/// After a crash, every open session's spool is cut back to its last
/// recorded checkpoint; a session whose spool vanished is expired. Chunked
/// and multipart uploads keep their bytes: only recorded pieces count, and
/// a chunk's bytes are durable before it is recorded.
async fn recover_sessions(repo: &Repository, store: &LocalStore) -> anyhow::Result<()> {
    for session in repo.sessions_in(SessionState::Receiving).await? {
        match session.kind {
            UploadKind::Stream | UploadKind::Tus | UploadKind::TusPartial => {}
            UploadKind::Chunked => {
                let spool = store.spool_path(&session.id);
                if !spool.exists() && !repo.pieces_of(&session.id).await?.is_empty() {
                    tracing::warn!(upload_id = %session.id, "a chunked upload's spool is gone; expiring it");
                    repo.close_session(&session.id, SessionState::Expired, None, Some("spool lost")).await?;
                }
                continue;
            }
            UploadKind::Multipart => {
                // Parts that were still arriving are incomplete: drop them.
                let (store, id) = (store.clone(), session.id.clone());
                tokio::task::spawn_blocking(move || store.discard_incomplete_pieces(&id)).await??;
                continue;
            }
        }
        let path = store.spool_path(&session.id);
        let durable = session.durable_bytes;
        let on_disk = tokio::task::spawn_blocking(move || crate::storage::cut_spool(&path, durable)).await??;
        match on_disk {
            Some(len) if len < durable => repo.record_progress(&session.id, len).await?,
            None if durable > 0 => {
                tracing::warn!(upload_id = %session.id, "an upload's spool is gone; expiring it");
                repo.close_session(&session.id, SessionState::Expired, None, Some("spool lost")).await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// A spool or a directory of parts whose session is closed (or unknown) is
/// what a kill between a session's close and their removal leaves, or a
/// commit that start-up recovery finished in an older version: removed at
/// start-up, so no finished upload keeps its size on the disk.
async fn sweep_orphan_spools(repo: &Repository, store: &LocalStore) -> anyhow::Result<()> {
    let dir = store.root().join(".spool");
    let names = tokio::task::spawn_blocking(move || crate::storage::file_names(&dir)).await??;
    for name in names {
        let Some(raw) = name.strip_suffix(".part").or_else(|| name.strip_suffix(".pieces")) else { continue };
        let Ok(id) = UploadId::parse(raw) else { continue };
        let open = repo
            .find_session(&id)
            .await?
            .is_some_and(|s| matches!(s.state, SessionState::Receiving | SessionState::Committing));
        if !open {
            tracing::info!(upload_id = %id, "removing the spool of a finished upload");
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.discard_spool(&id)).await??;
        }
    }
    Ok(())
}

/// A tus upload whose last byte was durable when the daemon died, before
/// its commit: the client has nothing left to send (HEAD shows the full
/// offset), so the commit is started here instead of waiting for a PATCH
/// that will never come. `GET /files/{id}/result` does the same on demand.
async fn commit_whole_tus_uploads(repo: Repository, uploads: Uploads) {
    let sessions = match repo.sessions_in(SessionState::Receiving).await {
        Ok(sessions) => sessions,
        Err(e) => {
            tracing::warn!(error = %e, "could not list uploads to finish");
            return;
        }
    };
    for session in sessions {
        if session.kind == UploadKind::Tus && session.total_size == Some(session.durable_bytes) {
            match uploads.commit_if_whole(&session.id).await {
                Ok(Some(result)) => {
                    tracing::info!(upload_id = %session.id, status = ?result.status, "a whole tus upload was committed at start-up")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(upload_id = %session.id, error = %e, "a whole tus upload could not be committed at start-up")
                }
            }
        }
    }
}

fn method_not_allowed<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let message = format!("{} is not allowed on {}", res.request().method(), res.request().path());
    let (req, _) = res.into_parts();
    let response = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", message).error_response();
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(req, response).map_into_right_body::<B>().map_body(
        |_, body| match body {
            EitherBody::Left { body } => EitherBody::left(body),
            EitherBody::Right { body } => EitherBody::right(body),
        },
    )))
}

/// A database URL without its password, for error messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// SIGTERM or SIGINT, whichever comes first.
async fn stop_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        interrupted = tokio::signal::ctrl_c() => interrupted,
    }
}
