//! The integration suite: one binary, every test through HTTP against a real
//! app with its own port, storage root and database.

mod bad_input;
mod cache;
mod helpers;
mod ingest;
mod lifecycle;
mod restart;
