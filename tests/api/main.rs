//! The integration suite: one binary, every test through HTTP against a real
//! app with its own port, storage root and database.
#![allow(clippy::disallowed_methods)] // tests may block; the rule is for the daemon (clippy.toml)

mod access;
mod analysis;
mod bad_input;
mod bad_input_doors;
mod cache;
mod chunked;
mod cluster;
mod corpus;
mod early_probe;
mod engine;
mod frames;
mod helpers;
mod ingest;
mod jobs;
mod lifecycle;
mod multipart;
mod near_duplicates;
mod pages;
mod playback;
mod queue;
mod real_footage;
mod restart;
mod restart_doors;
mod s3;
mod shared_uploads;
mod signed_uploads;
mod tenancy;
mod transcode;
mod tus;
mod webhooks;
