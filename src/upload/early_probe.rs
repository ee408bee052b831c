//! `EarlyProbe`: the analysis of an upload (probe, sampled frame hashes,
//! keyframes, a full decode check), run while its bytes arrive. A thread of
//! its own reads the spool through a `StreamingBuffer`; the session feeds
//! the buffer as the contiguous prefix grows. At finalize the answer is
//! usually there already, so the commit does not read the file again.
//!
//! Bounded: at most `slots` probes run at once. An upload that finds no free
//! slot simply has none, and is probed from its file at finalize, as before.
//! The writer never waits for the probe.
#![allow(clippy::disallowed_methods)] // `EarlyProbe::start` runs on blocking threads (`Core::probe_starter`) (clippy.toml)

use crate::domain::UploadId;
use crate::media::analysis::analyze_stream;
use crate::media::streaming::{BufferWriter, streaming_buffer};
use crate::media::{Analysis, AnalysisSettings, ProbeError};
use crate::storage::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Probes running now, against a limit.
#[derive(Clone)]
pub struct ProbeSlots {
    running: Arc<AtomicUsize>,
    limit: usize,
    settings: Arc<AnalysisSettings>,
}

impl ProbeSlots {
    pub fn new(limit: usize, settings: AnalysisSettings) -> Self {
        let limit = if settings.enabled { limit } else { 0 };
        Self { running: Arc::new(AtomicUsize::new(0)), limit, settings: Arc::new(settings) }
    }

    fn try_take(&self) -> Option<SlotGuard> {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.limit).then_some(n + 1))
            .ok()
            .map(|_| SlotGuard(self.running.clone()))
    }
}

struct SlotGuard(Arc<AtomicUsize>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The complete analysis of an upload whose finalize took a partial one
/// (`analysis::analyze_stream` hands over when the rest would take too long).
pub type Refined = tokio::sync::oneshot::Receiver<Result<Analysis, ProbeError>>;

pub struct EarlyProbe {
    /// Feeds the probe's buffer; the session and its writers advance it.
    pub feed: Arc<BufferWriter>,
    answer: tokio::sync::oneshot::Receiver<Result<Analysis, ProbeError>>,
    refined: Refined,
}

/// How long finalize waits for a probe that has all the bytes.
const FINISH_WAIT: Duration = Duration::from_secs(30);

impl EarlyProbe {
    /// Starts a probe over the spool of `id` (which must exist), if a slot is free.
    pub fn start(store: &dyn Store, id: &UploadId, total: Option<u64>, slots: &ProbeSlots) -> Option<Self> {
        let slot = slots.try_take()?;
        let file = std::fs::File::open(store.spool_path(id)).ok()?;
        let (writer, reader) = streaming_buffer(file, total);
        let (tx, answer) = tokio::sync::oneshot::channel();
        let (refined_tx, refined) = tokio::sync::oneshot::channel();
        let settings = slots.settings.clone();
        let spawned = std::thread::Builder::new().name("vidcache-probe".into()).spawn(move || {
            let _slot = slot;
            let mut first = Some(tx);
            let result = {
                // A partial analysis handed over goes to finalize; the
                // complete one then follows on `refined`.
                let mut handoff = |partial| {
                    if let Some(tx) = first.take() {
                        let _ = tx.send(Ok(partial));
                    }
                };
                // A panic inside libav bindings must cost one analysis, not the daemon.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    analyze_stream(reader, &settings, &mut handoff)
                }))
                .unwrap_or_else(|_| Err(ProbeError::NotAVideo("the probe could not read this stream".into())))
            };
            let _ = match first.take() {
                Some(tx) => tx.send(result),
                None => refined_tx.send(result),
            };
        });
        spawned.ok()?;
        Some(Self { feed: Arc::new(writer), answer, refined })
    }

    /// Tells the probe every byte is there and waits for its answer (`None`
    /// if it failed to answer in time), with where the complete analysis
    /// will come if that answer was a partial one handed over.
    pub async fn finish(self) -> (Option<Result<Analysis, ProbeError>>, Refined) {
        self.feed.complete();
        let answer = tokio::time::timeout(FINISH_WAIT, self.answer).await.ok().and_then(Result::ok);
        (answer, self.refined)
    }

    /// Stops the probe: the upload ended, or its bytes will change.
    pub fn abandon(self) {
        self.feed.abandon();
    }
}
