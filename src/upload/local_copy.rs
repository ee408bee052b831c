//! `LocalCopies`: what this daemon keeps of the shared uploads whose
//! pieces it took (`upload::shared`). Each chunk or tus part it stores in
//! the bucket is also written at its offset in the upload's spool here, and
//! an early probe reads the contiguous prefix as it grows, as for a kept
//! upload. A finalize on this daemon then fetches only the pieces other
//! daemons took, and finds the analysis mostly done: an upload that went
//! through one daemon is finalized without fetching a byte.
//!
//! A cache, and nothing more: a piece is acknowledged once it is in the
//! bucket and recorded, never because it is here. A copy is lost at a
//! restart (the finalize then fetches every piece, over whatever the
//! spool held), dropped when a write to it fails or the disk has no more
//! than `upload.reserve_bytes` free beside the piece, and abandoned after
//! [`IDLE`] without a piece (its upload went elsewhere). A piece here
//! counts at finalize only if it is the recorded piece: same number,
//! offset, length and BLAKE3.
#![allow(clippy::disallowed_methods)] // the file work runs on blocking threads (spawn_blocking)

use super::committer::Committer;
use super::early_probe::EarlyProbe;
use crate::domain::UploadId;
use crate::storage::{PieceAt, SessionState};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A copy that took no piece for this long is abandoned (its probe's slot
/// freed): its upload is going through other daemons, or nowhere.
pub const IDLE: Duration = Duration::from_secs(15 * 60);

/// How often [`LocalCopies::sweep`] runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone, Default)]
pub struct LocalCopies {
    copies: Arc<Mutex<HashMap<UploadId, Arc<tokio::sync::Mutex<LocalCopy>>>>>,
    /// `upload.reserve_bytes`: a piece is kept here only if the disk keeps
    /// this much free beside it. A cache must not fill the disk that kept
    /// uploads' spools need.
    reserve: u64,
}

#[derive(Default)]
struct LocalCopy {
    /// The pieces written here, by offset.
    here: BTreeMap<u64, PieceAt>,
    probe: Option<EarlyProbe>,
    /// A probe was asked for once (there may have been no free slot).
    probe_tried: bool,
    touched: Option<Instant>,
}

impl LocalCopy {
    /// Where the pieces here reach from byte 0 without a gap.
    fn prefix(&self) -> u64 {
        let mut end = 0;
        for (offset, piece) in &self.here {
            if *offset != end {
                break;
            }
            end += piece.len;
        }
        end
    }
}

/// A copy taken for a finalize: which of the upload's pieces are here, and
/// the probe that has read them (fed up to their prefix).
pub struct Taken {
    pub here: Vec<bool>,
    pub probe: Option<EarlyProbe>,
}

impl LocalCopies {
    pub fn new(reserve: u64) -> Self {
        Self { copies: Default::default(), reserve }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UploadId, Arc<tokio::sync::Mutex<LocalCopy>>>> {
        self.copies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `bytes`, the recorded `piece` of shared upload `id` (of
    /// `total` bytes, if known), into its spool here, and feeds its probe.
    /// Best effort: an error drops the copy and is only logged.
    pub async fn keep(&self, committer: &Committer, id: &UploadId, total: Option<u64>, piece: PieceAt, bytes: Bytes) {
        let copy = {
            let mut copies = self.lock();
            // Copies nobody fed for `IDLE` go (a copy in use is locked).
            copies.retain(|_, c| c.try_lock().map_or(true, |c| c.touched.is_none_or(|t| t.elapsed() < IDLE)));
            copies.entry(id.clone()).or_default().clone()
        };
        let mut copy = copy.lock().await;
        let start_probe = !copy.probe_tried;
        let (store, slots, spool_id) = (committer.store.clone(), committer.early_probes.clone(), id.clone());
        let reserve = self.reserve;
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<Option<EarlyProbe>> {
            use std::os::unix::fs::FileExt;
            let free = store.free_bytes()?;
            if free < reserve.saturating_add(piece.len) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!("{free} bytes free, {reserve} kept in reserve"),
                ));
            }
            store.open_spool(&spool_id)?.write_all_at(&bytes, piece.offset)?;
            Ok(if start_probe { EarlyProbe::start(&*store, &spool_id, total, &slots) } else { None })
        })
        .await;
        match written {
            Ok(Ok(probe)) => {
                if start_probe {
                    copy.probe = probe;
                    copy.probe_tried = true;
                }
                copy.here.insert(piece.offset, piece);
                copy.touched = Some(Instant::now());
                if let Some(probe) = &copy.probe {
                    probe.feed.advance(copy.prefix());
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(upload_id = %id, error = %e, "could not keep a piece here; the finalize will fetch it");
                drop(copy);
                self.forget(id);
            }
            Err(e) => {
                tracing::warn!(upload_id = %id, error = %e, "the thread keeping a piece here failed");
                drop(copy);
                self.forget(id);
            }
        }
    }

    /// Takes the copy of `id` for the finalize of `pieces` (in file order).
    pub async fn take(&self, id: &UploadId, pieces: &[PieceAt]) -> Option<Taken> {
        let copy = self.lock().remove(id)?;
        let mut copy = copy.lock().await;
        let here = pieces.iter().map(|p| copy.here.get(&p.offset) == Some(p)).collect();
        Some(Taken { here, probe: copy.probe.take() })
    }

    /// Drops the copies whose upload ended on another daemon (with their
    /// spool) or that took no piece for [`IDLE`], so their probes' slots
    /// serve other uploads. Run every [`SWEEP_EVERY`].
    pub async fn sweep(&self, committer: &Committer) {
        let ids: Vec<(UploadId, bool)> = self
            .lock()
            .iter()
            .map(|(id, c)| {
                let idle = c.try_lock().is_ok_and(|c| c.touched.is_some_and(|t| t.elapsed() >= IDLE));
                (id.clone(), idle)
            })
            .collect();
        for (id, idle) in ids {
            let state = match committer.repo.find_session(&id).await {
                Ok(record) => record.map(|r| r.state),
                Err(_) => continue,
            };
            let ended = !matches!(state, Some(SessionState::Receiving | SessionState::Committing));
            if ended || idle {
                self.forget(&id);
            }
            if ended {
                let store = committer.store.clone();
                let _ = tokio::task::spawn_blocking(move || store.discard_spool(&id)).await;
            }
        }
    }

    /// Drops the copy of `id` (its upload ended, or its bytes will change),
    /// stopping its probe. The spool goes with the session.
    pub fn forget(&self, id: &UploadId) {
        let copy = self.lock().remove(id);
        if let Some(copy) = copy
            && let Ok(mut copy) = copy.try_lock()
            && let Some(probe) = copy.probe.take()
        {
            probe.abandon();
        }
    }
}
