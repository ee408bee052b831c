//! Moving a body into a sink: the async side reads the body and gathers it
//! into blocks; a blocking thread writes and hashes them. A bounded channel
//! between the two keeps memory flat whatever the file size and lets network
//! reads overlap disk writes.
//!
//! Sinks: the `SpoolWriter` of a streamed or tus upload, a chunk written at
//! its offset in a `RangedSpool`, a multipart part in a file of its own, and
//! any of those behind `Checked`, which also digests the body for a
//! client-supplied checksum.

use super::{UploadError, writer::SpoolWriter};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use std::io;

/// Where a pump puts the bytes, on a blocking thread.
pub trait BlockSink: Send + 'static {
    fn put(&mut self, block: &[u8]) -> io::Result<()>;
    /// Bytes accepted so far, in the sink's own coordinates (the limit applies to it).
    fn position(&self) -> u64;
    /// Bytes put since the last `sync`.
    fn unsynced(&self) -> u64;
    /// Makes what was put durable; returns the durable position.
    fn sync(&mut self) -> io::Result<u64>;
    /// After a failed `put` or `sync`: forgets what was put since the last
    /// `sync`, so that the sink's position is its durable one again.
    /// Sinks of one piece (a chunk, a part) are recorded only whole, so a
    /// failed one is never counted and is rewritten in full: nothing to undo.
    fn undo_unsynced(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlockSink for SpoolWriter {
    fn put(&mut self, block: &[u8]) -> io::Result<()> {
        self.append(block)
    }
    fn position(&self) -> u64 {
        self.written()
    }
    fn unsynced(&self) -> u64 {
        SpoolWriter::unsynced(self)
    }
    fn sync(&mut self) -> io::Result<u64> {
        SpoolWriter::sync(self)
    }
    fn undo_unsynced(&mut self) -> io::Result<()> {
        SpoolWriter::undo_unsynced(self)
    }
}

/// A checksum algorithm a client can name (tus `Upload-Checksum`, `X-Chunk-Checksum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    Sha1,
    /// What browsers compute natively (WebCrypto), so the upload page's choice.
    Sha256,
    Blake3,
}

/// A running digest of one body.
pub enum Digest {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl Digest {
    pub fn new(kind: DigestKind) -> Self {
        use sha1::Digest as _;
        match kind {
            DigestKind::Sha1 => Self::Sha1(sha1::Sha1::new()),
            DigestKind::Sha256 => Self::Sha256(sha2::Sha256::new()),
            DigestKind::Blake3 => Self::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        use sha1::Digest as _;
        match self {
            Self::Sha1(d) => d.update(bytes),
            Self::Sha256(d) => d.update(bytes),
            Self::Blake3(d) => {
                d.update(bytes);
            }
        }
    }

    pub fn finish(self) -> Vec<u8> {
        use sha1::Digest as _;
        match self {
            Self::Sha1(d) => d.finalize().to_vec(),
            Self::Sha256(d) => d.finalize().to_vec(),
            Self::Blake3(d) => d.finalize().as_bytes().to_vec(),
        }
    }
}

/// A sink that also digests what passes through it, and feeds the early
/// probe as bytes land (only when there is no digest to check first: the
/// probe must never read bytes that a failed checksum will take back).
pub struct Checked<W> {
    pub inner: W,
    pub digest: Option<Digest>,
    pub feed: Option<std::sync::Arc<crate::media::streaming::BufferWriter>>,
}

impl<W: BlockSink> BlockSink for Checked<W> {
    fn put(&mut self, block: &[u8]) -> io::Result<()> {
        if let Some(d) = &mut self.digest {
            d.update(block);
        }
        self.inner.put(block)?;
        if self.digest.is_none()
            && let Some(feed) = &self.feed
        {
            feed.advance(self.inner.position());
        }
        Ok(())
    }
    fn position(&self) -> u64 {
        self.inner.position()
    }
    fn unsynced(&self) -> u64 {
        self.inner.unsynced()
    }
    fn sync(&mut self) -> io::Result<u64> {
        self.inner.sync()
    }
    fn undo_unsynced(&mut self) -> io::Result<()> {
        self.inner.undo_unsynced()
    }
}

pub struct PumpLimits {
    /// No byte past this position is accepted.
    pub max_bytes: u64,
    /// fdatasync and report progress every this many bytes (`u64::MAX`: only at the end).
    pub checkpoint_bytes: u64,
    /// Blocks handed to the writer thread are gathered up to this size.
    pub block_bytes: usize,
}

impl PumpLimits {
    /// A whole upload's body: large blocks, periodic checkpoints.
    pub fn body(max_bytes: u64, checkpoint_bytes: u64) -> Self {
        Self { max_bytes, checkpoint_bytes, block_bytes: 1 << 20 }
    }

    /// One piece (chunk or part): durable only when it is whole, and small
    /// blocks, since many pieces are in flight at once.
    pub fn piece(max_bytes: u64) -> Self {
        Self { max_bytes, checkpoint_bytes: u64::MAX, block_bytes: 256 << 10 }
    }
}

/// How a body ended.
pub enum PumpEnd {
    /// The body ended cleanly; everything in it is written and durable.
    /// `body_ended` is when its last byte arrived (finalize latency starts there).
    Complete { body_ended: std::time::Instant },
    /// The body broke off (client gone, upstream error). What arrived is
    /// written and durable, so the upload can resume from there.
    Interrupted(UploadError),
    /// The body went past the limit; nothing past it was written.
    TooLarge,
}

const BLOCKS_IN_FLIGHT: usize = 4;

/// Writes `body` into `sink`. `on_durable` is called from the writer thread
/// with each new durable position, after its fdatasync.
pub async fn pump<W, S, E>(
    sink: W,
    mut body: S,
    limits: PumpLimits,
    on_received: impl Fn(u64),
    on_durable: impl Fn(u64) + Send + 'static,
) -> (Option<W>, Result<PumpEnd, UploadError>)
where
    W: BlockSink,
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(BLOCKS_IN_FLIGHT);
    let checkpoint = limits.checkpoint_bytes;
    let mut offset = sink.position();
    let worker = tokio::task::spawn_blocking(move || {
        let mut sink = sink;
        let mut result = Ok(());
        while let Some(block) = rx.blocking_recv() {
            if let Err(e) = sink.put(&block) {
                result = Err(e);
                break;
            }
            if sink.unsynced() >= checkpoint {
                match sink.sync() {
                    Ok(durable) => on_durable(durable),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        // Whatever happened to the body, what was written becomes durable and
        // recorded, so that a resumed upload starts from the truth.
        if result.is_ok() {
            match sink.sync() {
                Ok(durable) => on_durable(durable),
                Err(e) => result = Err(e),
            }
        }
        // A write or sync failed (a full disk, an I/O error): what was put
        // since the last sync is taken back before anything else can write,
        // so the sink is where the durable offset says.
        if let Err(e) = &result
            && let Err(undo) = sink.undo_unsynced()
        {
            tracing::error!(error = %e, undo = %undo, "a failed write could not be undone");
            return (sink, Err(io::Error::other(format!("{e}; and undoing it failed: {undo}"))));
        }
        (sink, result)
    });

    let mut block = BytesMut::new();
    let mut end = None;
    loop {
        match body.next().await {
            Some(Ok(bytes)) => {
                offset += bytes.len() as u64;
                if offset > limits.max_bytes {
                    end = Some(PumpEnd::TooLarge);
                    break;
                }
                on_received(bytes.len() as u64);
                block.extend_from_slice(&bytes);
                if block.len() >= limits.block_bytes && tx.send(block.split().freeze()).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Some(Err(e)) => {
                end = Some(PumpEnd::Interrupted(UploadError::Truncated(e.to_string())));
                break;
            }
            None => break,
        }
    }
    let end = end.unwrap_or(PumpEnd::Complete { body_ended: std::time::Instant::now() });
    if !block.is_empty() && !matches!(end, PumpEnd::TooLarge) {
        let _ = tx.send(block.freeze()).await;
    }
    drop(tx);
    match worker.await {
        Ok((sink, Ok(()))) => (Some(sink), Ok(end)),
        Ok((sink, Err(e))) => (Some(sink), Err(UploadError::storage(e))),
        Err(join) => (None, Err(UploadError::Internal(format!("spool writer thread failed: {join}")))),
    }
}
