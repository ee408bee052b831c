//! vidcache: a daemon that takes in video, deduplicates it, and turns it into
//! something browsers can play. See ARCHITECTURE.md for the map.
//!
//! - `domain`: validated values (hashes, ids, locations, URLs); no frameworks.
//! - `upload`: the upload engine every front door shares (actors).
//! - `ingest`: fetching a URL into the engine, behind an SSRF guard.
//! - `media`: ffmpeg-next probing, on a SyncArbiter.
//! - `queue`: the job queue (embedded or Kafka) and the event bus.
//! - `transcode`: the HLS/DASH ladder and the worker that runs queued jobs.
//! - `storage`: the blob store and the sea-orm repository.
//! - `routes`: HTTP handlers.
// Tests may block: the rule is for the daemon (clippy.toml).
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod auth;
pub mod client;
pub mod config;
pub mod dedup;
pub mod domain;
pub mod error;
pub mod ingest;
pub mod library;
pub mod media;
pub mod queue;
pub mod routes;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod transcode;
pub mod upload;
pub mod webhooks;
