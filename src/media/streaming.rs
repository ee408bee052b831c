//! `StreamingBuffer`: lets a decoder read an upload while its bytes are still
//! arriving. The bytes live in the upload's spool file, not in memory; the
//! buffer only shares how far the contiguous prefix of received bytes
//! reaches, and whether the upload has ended.
//!
//! One writer (the upload session, which calls `advance` after writing, also
//! when an out-of-order chunk fills a gap) and one reader (a decoder on its
//! own thread, through `Read + Seek`). A read blocks until the bytes it wants
//! are there or the writer has closed; it is woken by a condition variable,
//! never by polling. End of file is reported only after the writer closes.
//! The writer never waits for the reader: a slow decoder falls behind, it
//! does not hold the upload back.
#![allow(clippy::disallowed_methods)] // a blocking module: the reader runs on probe threads (clippy.toml)

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

struct Shared {
    file: File,
    state: Mutex<State>,
    wake: Condvar,
    /// Where the reader is, for `Gauge`: how far behind the writer it runs.
    read_pos: AtomicU64,
}

struct State {
    /// Bytes `[0, available)` are in the file.
    available: u64,
    /// The declared size, if the upload has one (chunked, tus, multipart with a size).
    total: Option<u64>,
    ended: Option<End>,
    /// When the first bytes arrived.
    first_byte_at: Option<SystemTime>,
    /// When the writer said every byte is there.
    completed_at: Option<SystemTime>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    /// Every byte is there: reads past `available` are end of file.
    Complete,
    /// The upload failed or was abandoned: reads past `available` fail.
    Abandoned,
}

/// Creates the two ends over `file` (a handle to the spool that can read).
pub fn streaming_buffer(file: File, total: Option<u64>) -> (BufferWriter, BufferReader) {
    let state = State { available: 0, total, ended: None, first_byte_at: None, completed_at: None };
    let shared = Arc::new(Shared { file, state: Mutex::new(state), wake: Condvar::new(), read_pos: AtomicU64::new(0) });
    (BufferWriter { shared: shared.clone() }, BufferReader { shared, pos: 0 })
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn end(&self, end: End) {
        let mut state = self.lock();
        if state.ended.is_none() {
            state.ended = Some(end);
            if end == End::Complete {
                state.total = Some(state.available);
                state.completed_at = Some(SystemTime::now());
            }
        }
        drop(state);
        self.wake.notify_all();
    }
}

/// The upload's end. Dropping it without `complete` abandons the buffer, so
/// a reader can never wait for a writer that is gone. Once ended, the end is
/// final: later calls change nothing.
pub struct BufferWriter {
    shared: Arc<Shared>,
}

impl BufferWriter {
    /// The contiguous prefix now reaches `available` (the bytes are written).
    pub fn advance(&self, available: u64) {
        let mut state = self.shared.lock();
        if available > state.available {
            if state.available == 0 {
                state.first_byte_at = Some(SystemTime::now());
            }
            state.available = available;
            drop(state);
            self.shared.wake.notify_all();
        }
    }

    /// Every byte is written.
    pub fn complete(&self) {
        self.shared.end(End::Complete);
    }

    /// The upload will not finish (failed, expired, aborted), or its bytes
    /// are about to change under the reader (a body restarted from 0).
    pub fn abandon(&self) {
        self.shared.end(End::Abandoned);
    }
}

impl Drop for BufferWriter {
    fn drop(&mut self) {
        self.shared.end(End::Abandoned);
    }
}

/// The decoder's end: a blocking `Read + Seek` over the bytes so far.
pub struct BufferReader {
    shared: Arc<Shared>,
    pos: u64,
}

impl BufferReader {
    /// Waits until byte `pos` is there, or the upload ended; answers how many
    /// bytes can be read at `pos` (0 at the end of a complete upload).
    fn wait_for(&self, pos: u64) -> io::Result<u64> {
        let mut state = self.shared.lock();
        loop {
            if pos < state.available {
                return Ok(state.available - pos);
            }
            match state.ended {
                Some(End::Complete) => return Ok(0),
                Some(End::Abandoned) => return Err(io::Error::other("the upload was abandoned")),
                None => {}
            }
            // Past the declared size there is nothing to wait for.
            if state.total.is_some_and(|total| pos >= total) {
                return Ok(0);
            }
            state = self.shared.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// The declared size, or (without one) the size once the upload ended.
    fn wait_for_size(&self) -> io::Result<u64> {
        let mut state = self.shared.lock();
        loop {
            if let Some(total) = state.total {
                return Ok(total);
            }
            if state.ended == Some(End::Abandoned) {
                return Err(io::Error::other("the upload was abandoned"));
            }
            state = self.shared.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

impl Read for BufferReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let ready = self.wait_for(self.pos)?;
        let want = (buf.len() as u64).min(ready) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.shared.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        self.shared.read_pos.store(self.pos, Ordering::Relaxed);
        Ok(n)
    }
}

impl Seek for BufferReader {
    /// Seeking itself never waits for bytes, except `SeekFrom::End` on an
    /// upload of unknown size, which waits for the upload to end. Reading at
    /// the new position waits as `read` does.
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.wait_for_size()?.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.shared.read_pos.store(self.pos, Ordering::Relaxed);
        Ok(self.pos)
    }
}

impl BufferReader {
    /// The upload's declared size, if it has one.
    pub fn declared_size(&self) -> Option<u64> {
        self.shared.lock().total
    }

    /// A view of how the reader keeps up, for the decoder that owns it
    /// (the reader itself moves into FFmpeg's I/O context).
    pub fn gauge(&self) -> Gauge {
        Gauge { shared: self.shared.clone() }
    }
}

/// How far a reader is behind its writer, and when bytes came.
#[derive(Clone)]
pub struct Gauge {
    shared: Arc<Shared>,
}

impl Gauge {
    /// Bytes received that the reader has not reached yet.
    pub fn backlog(&self) -> u64 {
        let available = self.shared.lock().available;
        available.saturating_sub(self.shared.read_pos.load(Ordering::Relaxed))
    }

    pub fn first_byte_at(&self) -> Option<SystemTime> {
        self.shared.lock().first_byte_at
    }

    pub fn completed_at(&self) -> Option<SystemTime> {
        self.shared.lock().completed_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn spool() -> (tempfile::NamedTempFile, File) {
        let file = tempfile::NamedTempFile::new().unwrap();
        let reader = File::open(file.path()).unwrap();
        (file, reader)
    }

    #[test]
    fn reads_wait_for_bytes_and_end_only_after_the_writer_completes() {
        let (mut file, handle) = spool();
        let (writer, mut reader) = streaming_buffer(handle, None);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let feeder = {
            let data = data.clone();
            std::thread::spawn(move || {
                for (i, piece) in data.chunks(10_000).enumerate() {
                    file.write_all(piece).unwrap();
                    file.flush().unwrap();
                    writer.advance(((i + 1) * 10_000).min(data.len()) as u64);
                    std::thread::sleep(Duration::from_millis(1));
                }
                writer.complete();
                file
            })
        };
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, data, "the reader saw every byte, in order, and EOF only at the end");
        feeder.join().unwrap();
    }

    #[test]
    fn seek_set_cur_and_end_move_where_they_say() {
        let (file, handle) = spool();
        file.as_file().write_all_at(b"0123456789", 0).unwrap();
        let (writer, mut reader) = streaming_buffer(handle, Some(10));
        writer.advance(10);
        let mut two = [0u8; 2];
        assert_eq!(reader.seek(SeekFrom::Start(3)).unwrap(), 3);
        reader.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"34");
        assert_eq!(reader.seek(SeekFrom::Current(2)).unwrap(), 7);
        reader.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"78");
        assert_eq!(reader.seek(SeekFrom::Current(-9)).unwrap(), 0);
        assert_eq!(reader.seek(SeekFrom::End(-1)).unwrap(), 9);
        reader.read_exact(&mut two[..1]).unwrap();
        assert_eq!(two[0], b'9');
        assert!(reader.seek(SeekFrom::Current(-20)).is_err(), "before the start");
        writer.complete();
        assert_eq!(reader.read(&mut two).unwrap(), 0, "end of file after the writer completed");
    }

    /// Out-of-order pieces fill gaps; the writer advances over the contiguous
    /// prefix only. Many sizes and piece lengths; the reader sees every byte.
    #[test]
    fn a_concurrent_writer_and_reader_agree_on_every_byte_across_sizes() {
        for (n, size) in [0usize, 1, 4095, 4096, 65_537, 1 << 20, 3_000_001].into_iter().enumerate() {
            let (file, handle) = spool();
            let (writer, mut reader) = streaming_buffer(handle, if n % 2 == 0 { Some(size as u64) } else { None });
            let data: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8).collect();
            let feeder = {
                let data = data.clone();
                let file = file.reopen().unwrap();
                std::thread::spawn(move || {
                    let piece = 1 + (7_919 * (n + 1)) % 100_003;
                    let pieces: Vec<(usize, &[u8])> =
                        data.chunks(piece).enumerate().map(|(i, c)| (i * piece, c)).collect();
                    // Pairs swapped: piece 1 lands before piece 0, and so on.
                    let mut written = vec![false; pieces.len()];
                    let mut prefix = 0;
                    for pair in (0..pieces.len()).collect::<Vec<_>>().chunks(2) {
                        for &i in pair.iter().rev() {
                            file.write_all_at(pieces[i].1, pieces[i].0 as u64).unwrap();
                            written[i] = true;
                            while prefix < pieces.len() && written[prefix] {
                                prefix += 1;
                            }
                            let reach = pieces.get(prefix).map_or(data.len(), |p| p.0);
                            writer.advance(reach as u64);
                        }
                    }
                    writer.complete();
                })
            };
            let mut got = Vec::new();
            reader.read_to_end(&mut got).unwrap();
            feeder.join().unwrap();
            assert!(got == data, "size {size}: the reader's bytes differ from the writer's");
        }
    }

    #[test]
    fn seek_to_the_end_of_an_unsized_upload_waits_for_it_to_complete() {
        let (mut file, handle) = spool();
        let (writer, mut reader) = streaming_buffer(handle, None);
        file.write_all(b"0123456789").unwrap();
        writer.advance(10);
        let seeker = std::thread::spawn(move || reader.seek(SeekFrom::End(-2)).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        assert!(!seeker.is_finished(), "the end is not known yet");
        file.write_all(b"ab").unwrap();
        writer.advance(12);
        writer.complete();
        assert_eq!(seeker.join().unwrap(), 10);
    }

    #[test]
    fn a_declared_size_answers_seek_to_end_at_once_and_reads_there_wait() {
        let (file, handle) = spool();
        file.as_file().set_len(100).unwrap();
        let (writer, mut reader) = streaming_buffer(handle, Some(100));
        assert_eq!(reader.seek(SeekFrom::End(-10)).unwrap(), 90);
        let reading = std::thread::spawn(move || {
            let mut buf = [0u8; 10];
            reader.read_exact(&mut buf).map(|()| buf)
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reading.is_finished(), "byte 90 has not arrived");
        file.as_file().write_all_at(&[7u8; 100], 0).unwrap();
        writer.advance(100);
        assert_eq!(reading.join().unwrap().unwrap(), [7u8; 10]);
    }

    #[test]
    fn a_dropped_writer_fails_a_waiting_reader_instead_of_hanging_it() {
        let (_file, handle) = spool();
        let (writer, mut reader) = streaming_buffer(handle, None);
        let reading = std::thread::spawn(move || reader.read(&mut [0u8; 4]));
        std::thread::sleep(Duration::from_millis(20));
        drop(writer);
        assert!(reading.join().unwrap().is_err());
    }
}
