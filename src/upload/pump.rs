//! Moving a body into a spool: the async side reads the body and gathers it
//! into blocks of up to 1 MiB; a blocking thread writes and hashes them. A
//! bounded channel between the two keeps memory flat whatever the file size
//! and lets network reads overlap disk writes.

use super::{UploadError, writer::SpoolWriter};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

const BLOCK: usize = 1 << 20;
const BLOCKS_IN_FLIGHT: usize = 4;

pub struct PumpLimits {
    /// No byte past this offset is accepted.
    pub max_bytes: u64,
    /// fdatasync and report progress every this many bytes.
    pub checkpoint_bytes: u64,
}

/// How a body ended.
pub enum PumpEnd {
    /// The body ended cleanly; everything in it is written and durable.
    /// `body_ended` is when its last byte arrived (finalize latency starts there).
    Complete { body_ended: std::time::Instant },
    /// The body broke off (client gone, upstream error). What arrived is
    /// written and durable, so the upload can resume from there.
    Interrupted(UploadError),
    /// The body went past the size limit; the upload must be failed.
    TooLarge,
}

/// Writes `body` at the end of `writer`. `on_durable` is called from the
/// writer thread with each new durable length, after its fdatasync.
pub async fn pump<S, E>(
    writer: SpoolWriter,
    mut body: S,
    limits: PumpLimits,
    on_received: impl Fn(u64),
    on_durable: impl Fn(u64) + Send + 'static,
) -> (Option<SpoolWriter>, Result<PumpEnd, UploadError>)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(BLOCKS_IN_FLIGHT);
    let checkpoint = limits.checkpoint_bytes;
    let mut offset = writer.written();
    let worker = tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        let mut result = Ok(());
        while let Some(block) = rx.blocking_recv() {
            if let Err(e) = writer.append(&block) {
                result = Err(e);
                break;
            }
            if writer.unsynced() >= checkpoint {
                match writer.sync() {
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
            match writer.sync() {
                Ok(durable) => on_durable(durable),
                Err(e) => result = Err(e),
            }
        }
        (writer, result)
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
                if block.len() >= BLOCK && tx.send(block.split().freeze()).await.is_err() {
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
        Ok((writer, Ok(()))) => (Some(writer), Ok(end)),
        Ok((writer, Err(e))) => (Some(writer), Err(UploadError::Io(e))),
        Err(join) => (None, Err(UploadError::Internal(format!("spool writer thread failed: {join}")))),
    }
}
