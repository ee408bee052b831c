//! Objects and derived media in an S3-compatible store (`storage.backend =
//! "s3"`). The upload engine still writes its spools at offsets on this
//! daemon's disk (`storage.root`); a committed object and a published
//! ladder live in the bucket, which is their home: another daemon or a
//! worker on another machine reads them there, never from this disk.
//!
//! Layout in the bucket: `objects/{bucket}/{prefix}/{hash}.{ext}` (the
//! object key as on disk) and `media/{hash}/...` (thumbnail, `abr/` ladder).
//! A shared upload whose pieces have S3's part size is not joined: its
//! object *is* its pieces, `uploads/{id}/{n}`, named by one small file,
//! `layouts/{key}` ([`Layout`]), whose PUT is the commit; reads stitch
//! the pieces a range meets. So its finalize moves no byte, whatever its
//! size.
//!
//! The order that makes a kill -9 safe: an object is written to the bucket
//! *before* its spool is renamed away, so a spool that is gone means the
//! bucket has the object; a crash in between leaves the spool, and the
//! commit runs again (an S3 PUT of the same key is idempotent, and the key
//! names the content). A ladder is uploaded segments first and manifests
//! last, with a `published` marker after them: a reader that finds a
//! manifest finds every segment it names.
//!
//! The [`LocalStore`] under `storage.root` keeps a working copy of objects
//! this daemon committed or fetched (the prober, frame grabs and the
//! transcoder read files by path); reads served to clients come from the
//! bucket. All blocking methods are called on blocking threads; the S3
//! calls run on one runtime of their own ([`runtime`]), so a blocking
//! caller waits on a channel and an async caller on a join handle.
#![allow(clippy::disallowed_methods)] // a blocking module (clippy.toml)

use super::blob::{LocalStore, Store};
use crate::config::S3Settings;
use crate::domain::{ContentHash, ObjectKey, UploadId};
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as S3Path;
use object_store::signer::Signer;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart,
};
use std::fs::{self, File};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Parts of a multipart upload to the bucket (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 << 20;
/// Parts in flight per object: memory per commit stays at most this many parts.
const PARTS_IN_FLIGHT: usize = 2;
/// Read size when a file is streamed to the bucket.
const READ_BYTES: usize = 1 << 20;
/// Pieces of a shared upload fetched at once at finalize.
const FETCHES_IN_FLIGHT: usize = 4;
/// The smallest part S3 takes, but for the last one.
const MIN_PART_BYTES: u64 = 5 << 20;
/// The most parts one S3 object may have.
const MAX_PARTS: usize = 10_000;
/// The marker written after the last file of a published ladder.
const PUBLISHED: &str = "abr/.published";

/// One runtime for every S3 call of the process, never dropped (a runtime
/// may not be dropped inside another one, which is where a store ends).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vidcache-s3")
            .enable_all()
            .build()
            .expect("the S3 runtime starts")
    })
}

/// The bucket: what reads from clients and the store's writes go to.
#[derive(Debug, Clone)]
pub struct Bucket {
    client: Arc<AmazonS3>,
    name: String,
    redirect_reads: bool,
}

/// What a read of one file of the bucket found.
#[derive(Debug, Clone)]
pub struct Found {
    pub len: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn io_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        e => other(e),
    }
}

impl Bucket {
    /// Connects and creates the bucket when it is missing.
    pub async fn connect(settings: &S3Settings) -> anyhow::Result<Self> {
        anyhow::ensure!(!settings.bucket.is_empty(), "storage.s3.bucket is empty");
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_virtual_hosted_style_request(!settings.path_style);
        if !settings.endpoint.is_empty() {
            builder = builder.with_endpoint(&settings.endpoint).with_allow_http(settings.endpoint.starts_with("http:"));
        }
        if !settings.access_key_id.is_empty() {
            builder =
                builder.with_access_key_id(&settings.access_key_id).with_secret_access_key(&settings.secret_access_key);
        }
        let client = Arc::new(builder.build()?);
        let bucket = Self { client, name: settings.bucket.clone(), redirect_reads: settings.redirect_reads };
        let probe = bucket.clone();
        on_runtime(async move { probe.ensure_bucket().await }).await??;
        Ok(bucket)
    }

    /// A listing tells whether the bucket is there (S3 answers
    /// `NoSuchBucket` otherwise); a missing one is created with a presigned
    /// `PUT /{bucket}` (object_store has no call for it).
    async fn ensure_bucket(&self) -> anyhow::Result<()> {
        let mut listing = self.client.list(Some(&S3Path::from("objects")));
        match listing.next().await {
            None | Some(Ok(_)) => return Ok(()),
            Some(Err(e)) if e.to_string().contains("NoSuchBucket") => {}
            Some(Err(e)) => return Err(e.into()),
        }
        let url = self.client.signed_url(http::Method::PUT, &S3Path::from(""), Duration::from_secs(60)).await?;
        let answer = reqwest::Client::new().put(url.as_str()).send().await?;
        let status = answer.status();
        anyhow::ensure!(
            status.is_success() || status == reqwest::StatusCode::CONFLICT,
            "creating bucket {}: {status} {}",
            self.name,
            answer.text().await.unwrap_or_default()
        );
        tracing::info!(bucket = %self.name, "created the bucket");
        Ok(())
    }

    pub fn redirects_reads(&self) -> bool {
        self.redirect_reads
    }

    /// The bucket's key of an object.
    pub fn object(key: &ObjectKey) -> S3Path {
        S3Path::from(format!("objects/{}", key.as_str()))
    }

    /// The bucket's key of a file derived from a video (`rel` is made of
    /// validated names: `thumbnail.jpg`, `abr/hls/master.m3u8`).
    pub fn media(hash: &ContentHash, rel: &str) -> S3Path {
        S3Path::from(format!("media/{}/{rel}", hash.to_hex()))
    }

    /// The key of piece `number` of a shared upload (`upload::shared`): a
    /// chunk, a tus part or a multipart part, an object of its own (an S3
    /// PUT is atomic, where completing a multipart upload is not on every
    /// store: s3s-fs removes the parts as it joins them, so a completion
    /// cut off by a kill loses them).
    pub fn piece(id: &UploadId, number: u32) -> S3Path {
        S3Path::from(format!("uploads/{}/{number}", id.as_str()))
    }

    /// Puts piece `number` of a shared upload; answers its ETag.
    pub async fn put_piece(&self, id: &UploadId, number: u32, bytes: Bytes) -> io::Result<String> {
        let (client, path) = (self.client.clone(), Self::piece(id, number));
        on_runtime(async move {
            let put = client.put(&path, PutPayload::from(bytes)).await.map_err(io_error)?;
            Ok(put.e_tag.unwrap_or_default())
        })
        .await?
    }

    /// Removes a shared upload's tails and, unless `keep_pieces` (they
    /// are an object, [`Layout`]), its pieces. Any may be gone already.
    pub async fn discard_shared(&self, id: &UploadId, keep_pieces: bool) -> io::Result<()> {
        let client = self.client.clone();
        let mut prefixes = vec![format!("tails/{}", id.as_str())];
        if !keep_pieces {
            prefixes.push(format!("uploads/{}", id.as_str()));
        }
        on_runtime(async move {
            for prefix in prefixes {
                let mut listing = client.list(Some(&S3Path::from(prefix)));
                while let Some(meta) = listing.next().await {
                    let meta = meta.map_err(io_error)?;
                    match client.delete(&meta.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(other(e)),
                    }
                }
            }
            Ok(())
        })
        .await?
    }

    /// Joins the pieces of a shared upload into the local file `to` (the
    /// spool the engine commits from), each written at its offset, with up
    /// to [`FETCHES_IN_FLIGHT`] fetched at once, streamed: no piece is held
    /// whole in memory. Pieces whose `here` is true are in `to` already
    /// (this daemon took them) and are not fetched. `prefix(n)` is told
    /// each time bytes `0..n` are all in the file, in order (the analysis
    /// reads them while the rest arrive). On an error `to` holds a part of
    /// the upload; the caller discards it. Answers the bytes fetched. Blocks.
    pub fn fetch_pieces(
        &self,
        id: &UploadId,
        pieces: &[PieceAt],
        here: &[bool],
        to: &Path,
        mut prefix: impl FnMut(u64) + Send + 'static,
    ) -> io::Result<u64> {
        let dir = to.parent().ok_or_else(|| other("a fetched upload needs a directory"))?;
        fs::create_dir_all(dir)?;
        let total = pieces.last().map_or(0, |p| p.offset + p.len);
        // Whatever an earlier attempt left past the end goes.
        fs::OpenOptions::new().create(true).write(true).truncate(false).open(to)?.set_len(total)?;
        let (client, target) = (self.client.clone(), to.to_path_buf());
        let here: Vec<bool> = (0..pieces.len()).map(|i| here.get(i).copied().unwrap_or(false)).collect();
        let jobs: Vec<(usize, S3Path, PieceAt)> = pieces
            .iter()
            .enumerate()
            .filter(|(i, _)| !here[*i])
            .map(|(i, p)| (i, Self::piece(id, p.number), *p))
            .collect();
        let fetched_bytes = jobs.iter().map(|(_, _, p)| p.len).sum();
        let ends: Vec<u64> = pieces.iter().map(|p| p.offset + p.len).collect();
        block_on(async move {
            let mut fetched = futures_util::stream::iter(jobs)
                .map(|(i, path, piece)| {
                    let (client, target) = (client.clone(), target.clone());
                    async move {
                        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
                        let mut out = tokio::fs::OpenOptions::new().write(true).open(&target).await?;
                        out.seek(io::SeekFrom::Start(piece.offset)).await?;
                        let mut body = client.get(&path).await.map_err(io_error)?.into_stream();
                        let mut written = 0u64;
                        while let Some(chunk) = body.next().await {
                            let chunk = chunk.map_err(io_error)?;
                            written += chunk.len() as u64;
                            if written > piece.len {
                                break;
                            }
                            out.write_all(&chunk).await?;
                        }
                        if written != piece.len {
                            return Err(other(format!(
                                "piece {} of the upload holds {written} bytes, not {}",
                                piece.number, piece.len
                            )));
                        }
                        out.flush().await?;
                        Ok::<usize, io::Error>(i)
                    }
                })
                .buffer_unordered(FETCHES_IN_FLIGHT);
            // `prefix` follows the pieces here or done, from the first on.
            let mut done = here;
            let mut next = 0;
            let mut advance = |done: &[bool], next: &mut usize| {
                let before = *next;
                while *next < done.len() && done[*next] {
                    *next += 1;
                }
                if *next > before {
                    prefix(ends[*next - 1]);
                }
            };
            advance(&done, &mut next);
            while let Some(finished) = fetched.next().await {
                done[finished?] = true;
                advance(&done, &mut next);
            }
            // Not fsynced: the pieces are durable in the bucket, and the
            // file is a copy (a spool to analyse, or a working copy).
            Ok::<(), io::Error>(())
        })??;
        Ok(fetched_bytes)
    }

    /// Whether `pieces` are fit to be an object as they are ([`Layout`]):
    /// each but the last has S3's 5 MiB part size (a read of the object
    /// then costs at most one GET per 5 MiB, and the pieces could still be
    /// joined into one object by UploadPartCopy), and there are at most
    /// 10,000 of them.
    pub fn layable(pieces: &[PieceAt]) -> bool {
        let Some((_, init)) = pieces.split_last() else { return false };
        pieces.len() <= MAX_PARTS && init.iter().all(|p| p.len >= MIN_PART_BYTES)
    }

    /// The key of an object kept as its upload's pieces: its [`Layout`].
    pub fn layout(key: &ObjectKey) -> S3Path {
        S3Path::from(format!("layouts/{}", key.as_str()))
    }

    /// Where the object `key` is, or `None` when it is not in the bucket:
    /// one object, or the pieces its layout names.
    pub async fn find_object(&self, key: &ObjectKey) -> io::Result<Option<StoredObject>> {
        on_runtime(locate(self.client.clone(), key.clone())).await?
    }

    /// [`Bucket::find_object`], from a blocking thread.
    pub fn find_object_blocking(&self, key: &ObjectKey) -> io::Result<Option<StoredObject>> {
        block_on(locate(self.client.clone(), key.clone()))?
    }

    /// Writes the layout that makes `pieces` of upload `id` the object
    /// `key`: one PUT, which is the object's commit. Only if there is no
    /// layout at `key` yet (`If-None-Match: *`): when two uploads of the
    /// same bytes commit at once, the first layout stays and the second
    /// upload's pieces go at its settle. A store that ignores the condition
    /// lets the last one win, which `discard_staged` also handles. Blocks.
    pub fn put_layout(&self, key: &ObjectKey, id: &UploadId, pieces: &[PieceAt]) -> io::Result<()> {
        let layout = Layout {
            upload: id.as_str().to_owned(),
            pieces: pieces
                .iter()
                .map(|p| LaidPiece { number: p.number, offset: p.offset, len: p.len, blake3: p.hash.to_hex() })
                .collect(),
        };
        let (client, path) = (self.client.clone(), Self::layout(key));
        let bytes = serde_json::to_vec(&layout).map_err(other)?;
        block_on(async move {
            let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            match client.put_opts(&path, PutPayload::from(bytes), options).await {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                    Ok(())
                }
                Err(e) => Err(other(e)),
            }
        })?
    }

    /// Whether the object `key` is kept as the pieces of upload `id`: then
    /// they are the object's bytes and must stay.
    pub async fn laid_out_from(&self, key: &ObjectKey, id: &UploadId) -> io::Result<bool> {
        Ok(match self.find_object(key).await? {
            Some(StoredObject::Pieces(layout)) => layout.upload == id.as_str(),
            _ => false,
        })
    }

    /// Bytes `start..start + count` of the object `stored` found at `key`.
    pub fn stream_object(
        &self,
        key: &ObjectKey,
        stored: &StoredObject,
        start: u64,
        count: u64,
    ) -> futures_util::stream::BoxStream<'static, io::Result<Bytes>> {
        match stored {
            StoredObject::Whole(_) => Box::pin(self.stream(Self::object(key), start, count)),
            StoredObject::Pieces(layout) => match layout.placed() {
                Ok((id, placed)) => Box::pin(self.stream_pieces(&id, &placed, start, count)),
                Err(e) => Box::pin(futures_util::stream::once(std::future::ready(Err(e)))),
            },
        }
    }

    /// Bytes `start..start + count` of the file the pieces `placed` of
    /// upload `id` make: each piece from where the range meets it, at most
    /// two GETs open at once (a [`Bucket::stream`] begins reading as soon
    /// as it is made, so making them all at once would open one request
    /// per piece).
    pub fn stream_pieces(
        &self,
        id: &UploadId,
        placed: &[PieceAt],
        start: u64,
        count: u64,
    ) -> impl futures_util::Stream<Item = io::Result<Bytes>> + use<> {
        let end = start + count;
        let ranges: Vec<(u32, u64, u64)> = placed
            .iter()
            .map(|p| (p.number, start.max(p.offset), end.min(p.offset + p.len), p.offset))
            .filter(|(_, from, to, _)| from < to)
            .map(|(number, from, to, offset)| (number, from - offset, to - from))
            .collect();
        let (bucket, id) = (self.clone(), id.clone());
        // `buffered(2)` makes the next piece's stream (which starts its GET)
        // while this one is read: one piece ahead, at most a few chunks of
        // it held, so a GET's first byte does not wait for the last one's.
        futures_util::stream::iter(ranges)
            .map(move |(number, from, count)| std::future::ready(bucket.stream(Self::piece(&id, number), from, count)))
            .buffered(2)
            .flatten()
    }

    /// Copies the object `key` into the local file `to`: the one object,
    /// or its pieces, each fetched at its offset into a temporary file
    /// first, so a reader of `to` sees all of it or nothing. Blocks.
    fn download_object(&self, key: &ObjectKey, to: &Path) -> io::Result<()> {
        let layout = match self.find_object_blocking(key)? {
            Some(StoredObject::Whole(_)) => return self.download(Self::object(key), to),
            Some(StoredObject::Pieces(layout)) => layout,
            None => return Err(io::Error::new(io::ErrorKind::NotFound, format!("no object {}", key.as_str()))),
        };
        let (id, placed) = layout.placed()?;
        let dir = to.parent().ok_or_else(|| other("a fetched object needs a directory"))?;
        let tmp = dir.join(format!(".fetch-{}.tmp", UploadId::generate()));
        match self.fetch_pieces(&id, &placed, &[], &tmp, |_| {}) {
            Ok(_) => fs::rename(&tmp, to),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Removes the object `key`: the one object, or its layout and then
    /// the pieces it named (a reader never finds a layout whose pieces are
    /// gone, only a layout that is gone). Blocks.
    fn remove_object(&self, key: &ObjectKey) -> io::Result<()> {
        self.delete(Self::object(key))?;
        if let Some(StoredObject::Pieces(layout)) = self.find_object_blocking(key)? {
            self.delete(Self::layout(key))?;
            let (id, _) = layout.placed()?;
            self.delete_under(S3Path::from(format!("uploads/{}", id.as_str())))?;
        }
        Ok(())
    }

    /// The key of a shared tus upload's tail: the bytes past its last whole
    /// part, which start at the part boundary before `durable` (the
    /// upload's durable length when they were written).
    pub fn tail(id: &UploadId, durable: u64) -> S3Path {
        S3Path::from(format!("tails/{}/{durable}", id.as_str()))
    }

    pub async fn put_tail(&self, id: &UploadId, durable: u64, bytes: Bytes) -> io::Result<()> {
        let (client, path) = (self.client.clone(), Self::tail(id, durable));
        on_runtime(async move { client.put(&path, PutPayload::from(bytes)).await.map(drop).map_err(io_error) }).await?
    }

    pub async fn get_tail(&self, id: &UploadId, durable: u64) -> io::Result<Bytes> {
        let (client, path) = (self.client.clone(), Self::tail(id, durable));
        on_runtime(async move {
            let got = client.get(&path).await.map_err(io_error)?;
            got.bytes().await.map_err(io_error)
        })
        .await?
    }

    pub async fn delete_tail(&self, id: &UploadId, durable: u64) -> io::Result<()> {
        let (client, path) = (self.client.clone(), Self::tail(id, durable));
        on_runtime(async move {
            match client.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(other(e)),
            }
        })
        .await?
    }

    /// Length, tag and time of one file, or `None` if it is not there.
    pub async fn find(&self, path: S3Path) -> io::Result<Option<Found>> {
        let client = self.client.clone();
        let head = on_runtime(async move { client.head(&path).await }).await?;
        match head {
            Ok(meta) => Ok(Some(Found { len: meta.size, modified: meta.last_modified })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(other(e)),
        }
    }

    /// Bytes `start..start + count` of a file, as a stream that reads as
    /// it is sent: at most a few chunks are held, whatever the length.
    pub fn stream(
        &self,
        path: S3Path,
        start: u64,
        count: u64,
    ) -> impl futures_util::Stream<Item = io::Result<Bytes>> + use<> {
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
        let client = self.client.clone();
        runtime().spawn(async move {
            let options = GetOptions { range: Some(GetRange::Bounded(start..start + count)), ..GetOptions::default() };
            let mut body = match client.get_opts(&path, options).await {
                Ok(got) => got.into_stream(),
                Err(e) => {
                    let _ = tx.send(Err(io_error(e))).await;
                    return;
                }
            };
            while let Some(chunk) = body.next().await {
                // A client that went away closes the channel: stop reading.
                if tx.send(chunk.map_err(io_error)).await.is_err() {
                    return;
                }
            }
        });
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) })
    }

    /// A presigned GET of one file, valid for `ttl`.
    pub async fn presigned_get(&self, path: S3Path, ttl: Duration) -> io::Result<String> {
        let client = self.client.clone();
        let url = on_runtime(async move { client.signed_url(http::Method::GET, &path, ttl).await }).await?;
        url.map(|u| u.to_string()).map_err(other)
    }

    /// Writes a local file to `path`, streamed in parts. Blocks.
    fn upload_file(&self, file: &Path, path: S3Path) -> io::Result<()> {
        let client = self.client.clone();
        let file = file.to_path_buf();
        block_on(async move {
            use tokio::io::AsyncReadExt;
            let mut source = tokio::fs::File::open(&file).await?;
            let len = source.metadata().await?.len();
            if len <= PART_BYTES as u64 {
                let mut bytes = Vec::with_capacity(len as usize);
                source.read_to_end(&mut bytes).await?;
                client.put(&path, PutPayload::from(bytes)).await.map_err(io_error)?;
                return Ok(());
            }
            let upload = client.put_multipart(&path).await.map_err(io_error)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut buf = vec![0u8; READ_BYTES];
            loop {
                let n = source.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    writer.abort().await.ok();
                    return Err(io_error(e));
                }
                writer.write(&buf[..n]);
            }
            writer.finish().await.map_err(io_error)?;
            Ok(())
        })?
    }

    /// Copies `path` into a local file, by way of a temporary one, so a
    /// reader of `to` sees all of it or nothing. Blocks.
    fn download(&self, path: S3Path, to: &Path) -> io::Result<()> {
        let dir = to.parent().ok_or_else(|| other("a fetched object needs a directory"))?;
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".fetch-{}.tmp", UploadId::generate()));
        let client = self.client.clone();
        let target = tmp.clone();
        let fetched = block_on(async move {
            use tokio::io::AsyncWriteExt;
            let mut body = client.get(&path).await.map_err(io_error)?.into_stream();
            let mut out = tokio::fs::File::create(&target).await?;
            while let Some(chunk) = body.next().await {
                out.write_all(&chunk.map_err(io_error)?).await?;
            }
            out.sync_all().await
        })
        .and_then(|r| r);
        match fetched {
            Ok(()) => fs::rename(&tmp, to),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn put_bytes(&self, path: S3Path, bytes: Vec<u8>) -> io::Result<()> {
        let client = self.client.clone();
        block_on(async move { client.put(&path, PutPayload::from(bytes)).await.map(drop).map_err(io_error) })?
    }

    fn get_bytes(&self, path: S3Path) -> io::Result<Option<Vec<u8>>> {
        let client = self.client.clone();
        block_on(async move {
            match client.get(&path).await {
                Ok(got) => got.bytes().await.map(|b| Some(b.to_vec())).map_err(io_error),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(other(e)),
            }
        })?
    }

    fn exists(&self, path: S3Path) -> io::Result<bool> {
        let client = self.client.clone();
        block_on(async move {
            match client.head(&path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(other(e)),
            }
        })?
    }

    fn delete(&self, path: S3Path) -> io::Result<()> {
        let client = self.client.clone();
        block_on(async move {
            match client.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(other(e)),
            }
        })?
    }

    /// Removes every file under `prefix`. Blocks.
    fn delete_under(&self, prefix: S3Path) -> io::Result<()> {
        let client = self.client.clone();
        block_on(async move {
            let mut listing = client.list(Some(&prefix));
            while let Some(meta) = listing.next().await {
                let meta = match meta {
                    Ok(meta) => meta,
                    Err(object_store::Error::NotFound { .. }) => break,
                    Err(e) => return Err(other(e)),
                };
                match client.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(other(e)),
                }
            }
            Ok(())
        })?
    }

    /// Every key under `prefix` with its length. Blocks.
    pub fn list_blocking(&self, prefix: &str) -> io::Result<Vec<(String, u64)>> {
        let client = self.client.clone();
        let prefix = S3Path::from(prefix);
        block_on(async move {
            let mut out = Vec::new();
            let mut listing = client.list(Some(&prefix));
            while let Some(meta) = listing.next().await {
                match meta {
                    Ok(meta) => out.push((meta.location.to_string(), meta.size)),
                    Err(object_store::Error::NotFound { .. }) => break,
                    Err(e) => return Err(other(e)),
                }
            }
            Ok(out)
        })?
    }

    /// Whether the bucket has the key `key`. Blocks.
    pub fn exists_blocking(&self, key: &str) -> io::Result<bool> {
        self.exists(S3Path::from(key))
    }

    /// Writes a local file to the bucket key `key`. Blocks.
    pub fn put_file_blocking(&self, file: &Path, key: &str) -> io::Result<()> {
        self.upload_file(file, S3Path::from(key))
    }

    /// The BLAKE3 hash of the file at `key`, read as a stream. Blocks.
    pub fn blake3_blocking(&self, key: &str) -> io::Result<blake3::Hash> {
        let client = self.client.clone();
        let path = S3Path::from(key);
        block_on(async move {
            let mut hasher = blake3::Hasher::new();
            let mut body = client.get(&path).await.map_err(io_error)?.into_stream();
            while let Some(chunk) = body.next().await {
                hasher.update(&chunk.map_err(io_error)?);
            }
            Ok(hasher.finalize())
        })?
    }
}

/// Runs `f` on the S3 runtime and waits for it from async code.
async fn on_runtime<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> io::Result<T> {
    runtime().spawn(f).await.map_err(other)
}

/// Runs `f` on the S3 runtime and waits for it on this (blocking) thread.
fn block_on<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> io::Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().map_err(|_| other("an S3 call was cut off"))
}

/// Where piece `number` of a shared upload goes in the joined file, and
/// its BLAKE3 (the bytes recorded for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceAt {
    pub number: u32,
    pub offset: u64,
    pub len: u64,
    pub hash: ContentHash,
}

impl PieceAt {
    /// `pieces`, one after the other from 0.
    pub fn in_order<'a>(pieces: impl IntoIterator<Item = &'a super::Piece>) -> Vec<Self> {
        let mut offset = 0;
        pieces
            .into_iter()
            .map(|p| {
                let at = Self { number: p.number, offset, len: p.size, hash: p.hash };
                offset += p.size;
                at
            })
            .collect()
    }
}

/// An object kept as the pieces of the shared upload that brought it
/// (`layouts/{key}`, [`Bucket::layout`]): its finalize moves no byte, it
/// writes this. The pieces stay `uploads/{upload}/{number}` for as long
/// as the object lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layout {
    pub upload: String,
    pub pieces: Vec<LaidPiece>,
}

/// Piece `number` of a layout, at `offset` in the object, with its
/// BLAKE3 (hex) as recorded when it arrived.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LaidPiece {
    pub number: u32,
    pub offset: u64,
    pub len: u64,
    pub blake3: String,
}

impl Layout {
    /// The upload whose pieces these are, and where they go in the object.
    fn placed(&self) -> io::Result<(UploadId, Vec<PieceAt>)> {
        let id = UploadId::parse(&self.upload).map_err(other)?;
        let pieces = self
            .pieces
            .iter()
            .map(|p| {
                let hash = ContentHash::parse(&p.blake3).map_err(other)?;
                Ok(PieceAt { number: p.number, offset: p.offset, len: p.len, hash })
            })
            .collect::<io::Result<_>>()?;
        Ok((id, pieces))
    }

    /// The object's length.
    pub fn size(&self) -> u64 {
        self.pieces.last().map_or(0, |p| p.offset + p.len)
    }

    /// The one piece that is the whole object, if there is one: a key a
    /// presigned GET can name.
    pub fn whole_piece(&self) -> Option<S3Path> {
        let [piece] = self.pieces.as_slice() else { return None };
        let id = UploadId::parse(&self.upload).ok()?;
        (piece.offset == 0).then(|| Bucket::piece(&id, piece.number))
    }
}

/// How an object is kept in the bucket.
#[derive(Debug, Clone)]
pub enum StoredObject {
    /// One file, `objects/{key}`.
    Whole(Found),
    /// The pieces of the upload that brought it.
    Pieces(Layout),
}

impl StoredObject {
    /// The object's length.
    pub fn size(&self) -> u64 {
        match self {
            Self::Whole(found) => found.len,
            Self::Pieces(layout) => layout.size(),
        }
    }
}

/// Where the object `key` is: `objects/{key}`, or else its layout.
async fn locate(client: Arc<AmazonS3>, key: ObjectKey) -> io::Result<Option<StoredObject>> {
    match client.head(&Bucket::object(&key)).await {
        Ok(meta) => return Ok(Some(StoredObject::Whole(Found { len: meta.size, modified: meta.last_modified }))),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(other(e)),
    }
    let bytes = match client.get(&Bucket::layout(&key)).await {
        Ok(got) => got.bytes().await.map_err(io_error)?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(other(e)),
    };
    let layout = serde_json::from_slice(&bytes).map_err(|e| other(format!("the layout of {}: {e}", key.as_str())))?;
    Ok(Some(StoredObject::Pieces(layout)))
}

/// [`Store`] with objects and media in a bucket and spools on local disk.
#[derive(Debug, Clone)]
pub struct S3Store {
    local: LocalStore,
    bucket: Bucket,
    /// `storage.s3.working_copy_bytes`.
    keep_bytes: u64,
}

impl S3Store {
    pub fn new(local: LocalStore, bucket: Bucket, keep_bytes: u64) -> Self {
        Self { local, bucket, keep_bytes }
    }

    /// The working copy of an object, fetched from the bucket when this
    /// daemon has none. A copy used again has its time set to now, which
    /// is what eviction goes by; only a fetch adds bytes, so only a fetch
    /// (or a commit) looks for copies to evict. Blocks.
    fn working_copy(&self, key: &ObjectKey) -> io::Result<PathBuf> {
        let path = self.local.object_path(key);
        if path.is_file() {
            let _ = File::options().write(true).open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        } else {
            self.bucket.download_object(key, &path)?;
            self.evict_beyond_limit(&path);
        }
        Ok(path)
    }

    /// Removes the least recently used working copies until they fit in
    /// `keep_bytes`, never `keep` (the one just used). A reader that has a
    /// copy open keeps reading it (its inode lives on); one that has not
    /// opened it yet fetches it again. Blocks.
    fn evict_beyond_limit(&self, keep: &Path) {
        let mut copies = Vec::new();
        let _ = working_copies(self.local.root(), self.local.root(), &mut copies);
        let mut total: u64 = copies.iter().map(|(_, len, _)| len).sum();
        if total <= self.keep_bytes {
            return;
        }
        copies.sort_by_key(|(_, _, modified)| *modified);
        for (path, len, _) in copies {
            if total <= self.keep_bytes {
                break;
            }
            if path != keep && fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }

    /// Uploads every file of a built ladder under `media/{hash}/abr/`:
    /// segments and init segments first, then playlists and manifests,
    /// then the marker. Blocks.
    fn upload_ladder(&self, hash: &ContentHash) -> io::Result<()> {
        let abr = crate::transcode::renditions_dir(&self.local.derived_dir(hash));
        let mut files = Vec::new();
        walk(&abr, &mut files)?;
        // Manifests name segments: they go last.
        files.sort_by_key(|p| {
            let name = p.to_string_lossy();
            (name.ends_with(".m3u8") || name.ends_with(".mpd"), name.ends_with("master.m3u8"))
        });
        for file in &files {
            let rel = file.strip_prefix(&abr).map_err(other)?.to_string_lossy().into_owned();
            self.bucket.upload_file(file, Bucket::media(hash, &format!("abr/{rel}")))?;
        }
        let version = crate::transcode::LADDER_VERSION.to_string().into_bytes();
        self.bucket.put_bytes(Bucket::media(hash, PUBLISHED), version)
    }
}

/// Working copies under the root: every file outside vidcache's own
/// dot-directories and the SQLite files, with length and time.
fn working_copies(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, u64, std::time::SystemTime)>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || (dir == root && name.starts_with("vidcache.db")) {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            working_copies(root, &path, out)?;
        } else if kind.is_file() {
            let meta = entry.metadata()?;
            out.push((path, meta.len(), meta.modified()?));
        }
    }
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

impl Store for S3Store {
    fn spool_path(&self, id: &UploadId) -> PathBuf {
        self.local.spool_path(id)
    }

    fn open_spool(&self, id: &UploadId) -> io::Result<File> {
        self.local.open_spool(id)
    }

    fn commit(&self, id: &UploadId, key: &ObjectKey) -> io::Result<()> {
        // The bucket first: a spool that is gone means the bucket has it.
        self.bucket.upload_file(&self.local.spool_path(id), Bucket::object(key))?;
        self.local.keep_copy(id, key)?;
        self.evict_beyond_limit(&self.local.object_path(key));
        Ok(())
    }

    fn commit_pieces(&self, id: &UploadId, key: &ObjectKey, pieces: &[PieceAt]) -> io::Result<bool> {
        if !Bucket::layable(pieces) {
            return self.commit(id, key).map(|()| false);
        }
        // As `commit`: the object in the bucket before the spool goes. The
        // same bytes there already (a whole object, or another upload's
        // layout) need nothing more: this upload's pieces then go at its
        // settle (`upload::shared::discard_staged`).
        if self.bucket.find_object_blocking(key)?.is_none() {
            self.bucket.put_layout(key, id, pieces)?;
        }
        self.local.keep_copy(id, key)?;
        self.evict_beyond_limit(&self.local.object_path(key));
        Ok(true)
    }

    fn discard_spool(&self, id: &UploadId) -> io::Result<()> {
        self.local.discard_spool(id)
    }

    fn piece_path(&self, id: &UploadId, number: u32, hash: &str) -> PathBuf {
        self.local.piece_path(id, number, hash)
    }

    fn discard_pieces(&self, id: &UploadId) -> io::Result<()> {
        self.local.discard_pieces(id)
    }

    fn discard_incomplete_pieces(&self, id: &UploadId) -> io::Result<()> {
        self.local.discard_incomplete_pieces(id)
    }

    fn open_object(&self, key: &ObjectKey) -> io::Result<(File, u64)> {
        let path = self.working_copy(key)?;
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok((file, len))
    }

    fn object_path(&self, key: &ObjectKey) -> PathBuf {
        self.local.object_path(key)
    }

    fn fetch_object(&self, key: &ObjectKey) -> io::Result<PathBuf> {
        self.working_copy(key)
    }

    fn delete_object(&self, key: &ObjectKey) -> io::Result<()> {
        self.bucket.remove_object(key)?;
        self.local.delete_object(key)
    }

    fn check_writable(&self) -> io::Result<()> {
        self.local.check_writable()?;
        self.bucket.exists(S3Path::from(".vidcache-probe")).map(drop)
    }

    fn free_bytes(&self) -> io::Result<u64> {
        // Spools are still on this disk: it is what an upload fills.
        self.local.free_bytes()
    }

    fn derived_dir(&self, hash: &ContentHash) -> PathBuf {
        self.local.derived_dir(hash)
    }

    fn put_derived(&self, hash: &ContentHash, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.bucket.put_bytes(Bucket::media(hash, name), bytes.to_vec())
    }

    fn read_derived(&self, hash: &ContentHash, name: &str) -> io::Result<Option<Vec<u8>>> {
        self.bucket.get_bytes(Bucket::media(hash, name))
    }

    fn delete_derived(&self, hash: &ContentHash) -> io::Result<()> {
        self.bucket.delete_under(S3Path::from(format!("media/{}", hash.to_hex())))?;
        self.local.delete_derived(hash)
    }

    fn published_version(&self, hash: &ContentHash) -> Option<u32> {
        let marker = self.bucket.get_bytes(Bucket::media(hash, PUBLISHED)).ok()??;
        String::from_utf8(marker).ok()?.trim().parse().ok()
    }

    fn publish_ladder(&self, hash: &ContentHash) -> io::Result<()> {
        self.upload_ladder(hash)?;
        // The bucket is the ladder's home; this disk's copy was only the
        // transcoder's working directory.
        self.local.delete_derived(hash)
    }

    fn bucket(&self) -> Option<&Bucket> {
        Some(&self.bucket)
    }
}
