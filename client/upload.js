// The upload page: each chosen file goes through the chunked API (section 2
// of the contract) with several chunks in flight, resumes from what the
// server reports after a reload or a daemon restart, and then follows the
// video's transcode until it can be played.
'use strict';

/** Chunks in flight over all files: few enough to leave the browser's
 *  per-host connections free for the event stream and status calls. */
const IN_FLIGHT = 4;
/** Where the upload id of a file is remembered, by the file's fingerprint. */
const STORE_PREFIX = 'vidcache.upload.';
/** SHA-256 per chunk, by WebCrypto: native in every current browser, so it
 *  costs far less than the upload itself. It needs a secure context
 *  (https, or http on localhost); elsewhere chunks go without a checksum. */
const CAN_HASH = !!(window.isSecureContext && window.crypto && crypto.subtle);

const list = document.getElementById('uploads');
const uploads = [];

/** name, size and modification time: the same file picked again after a reload. */
function fingerprint(file) {
  return `${file.name}|${file.size}|${file.lastModified}`;
}

const remembered = {
  get(fp) {
    try { return JSON.parse(localStorage.getItem(STORE_PREFIX + fp)); } catch (_) { return null; }
  },
  set(fp, record) {
    try { localStorage.setItem(STORE_PREFIX + fp, JSON.stringify(record)); } catch (_) { /* private mode */ }
  },
  forget(fp) {
    try { localStorage.removeItem(STORE_PREFIX + fp); } catch (_) { /* private mode */ }
  },
  all() {
    const out = [];
    let keys = [];
    try { keys = Object.keys(localStorage); } catch (_) { /* storage disabled */ }
    for (const key of keys) {
      if (!key.startsWith(STORE_PREFIX)) continue;
      const record = this.get(key.slice(STORE_PREFIX.length));
      if (record) out.push({ fp: key.slice(STORE_PREFIX.length), ...record });
    }
    return out;
  },
};

/** Hands free slots to uploads with chunks to send, first file first. */
function schedule() {
  let busy = uploads.reduce((n, u) => n + u.inFlight.size, 0);
  for (const upload of uploads) {
    while (busy < IN_FLIGHT && upload.canSend()) {
      upload.sendNext();
      busy++;
    }
  }
}

class Upload {
  constructor(file) {
    this.file = file;
    this.fp = fingerprint(file);
    this.id = null;
    this.chunkSize = 0;
    this.total = 0;
    this.pending = []; // chunk indices still to send
    this.inFlight = new Map(); // index -> {xhr, loaded}
    this.doneBytes = 0; // bytes of chunks the server has
    this.state = 'starting';
    this.failures = 0; // transient failures in a row
    this.retryAt = 0;
    this.checksumRetries = 0;
    this.restarted = false;
    this.samples = []; // [time, bytes] for the rate
    this.sentChunks = 0;
    this.render();
  }

  // ---- the view ----

  render() {
    const f = this.file;
    this.bar = el('progress', { max: Math.max(f.size, 1), value: 0, 'aria-label': `Upload of ${f.name}` });
    this.stats = el('div', { class: 'stats' }, `0 B of ${formatBytes(f.size)}`);
    this.message = el('div', { class: 'message', role: 'status' }, 'Starting…');
    this.pauseButton = el('button', { type: 'button', onclick: () => this.togglePause() }, 'Pause');
    this.cancelButton = el('button', { type: 'button', onclick: () => this.cancel() }, 'Cancel');
    this.node = el('li', { class: 'upload', 'data-state': 'starting' },
      el('div', { class: 'head' },
        el('span', { class: 'name' }, f.name),
        el('span', { class: 'muted' }, formatBytes(f.size))),
      this.bar, this.stats, this.message,
      el('div', { class: 'actions' }, this.pauseButton, this.cancelButton));
    list.prepend(this.node);
  }

  setState(state, message) {
    this.state = state;
    this.node.dataset.state = state;
    if (message !== undefined) this.say(message);
    const open = state === 'sending' || state === 'paused' || state === 'starting';
    this.pauseButton.disabled = !(state === 'sending' || state === 'paused');
    this.pauseButton.textContent = state === 'paused' ? 'Resume' : 'Pause';
    this.cancelButton.disabled = !open && state !== 'error';
  }

  say(text, kind) {
    this.message.textContent = '';
    this.message.append(typeof text === 'string' ? document.createTextNode(text) : text);
    this.message.className = kind ? `message ${kind}` : 'message';
  }

  sentBytes() {
    let bytes = this.doneBytes;
    for (const flight of this.inFlight.values()) bytes += flight.loaded;
    return Math.min(bytes, this.file.size);
  }

  showProgress() {
    const bytes = this.sentBytes();
    this.bar.value = bytes;
    const now = performance.now();
    this.samples.push([now, bytes]);
    while (this.samples.length > 2 && now - this.samples[0][0] > 5000) this.samples.shift();
    const [t0, b0] = this.samples[0];
    const rate = now - t0 > 250 ? ((bytes - b0) * 1000) / (now - t0) : NaN;
    const left = rate > 0 ? (this.file.size - bytes) / rate : NaN;
    const pct = this.file.size ? Math.floor((bytes * 100) / this.file.size) : 100;
    const parts = [`${formatBytes(bytes)} of ${formatBytes(this.file.size)} (${pct}%)`];
    const waiting = now < this.retryAt;
    if (this.state === 'sending' && !waiting && rate > 0) parts.push(`${formatBytes(rate)}/s`, `${formatDuration(left)} left`);
    this.stats.textContent = parts.join(' · ');
    this.bar.setAttribute('aria-valuetext', `${pct} percent`);
  }

  // ---- starting and resuming ----

  async start() {
    try {
      const resumed = await this.resume();
      if (resumed === 'done') return;
      if (!resumed) await this.create();
      this.setState('sending', this.pending.length < this.total
        ? `Resuming: ${this.total - this.pending.length} of ${this.total} chunks were already on the server.`
        : `Sending ${this.total} chunk${this.total === 1 ? '' : 's'}…`);
      this.showProgress();
      this.next();
    } catch (e) {
      this.fail(e);
    }
  }

  /** Carries on an upload this browser started: true if it can, 'done' if it
   *  had finished, false to start over. */
  async resume() {
    const record = remembered.get(this.fp);
    if (!record || !record.id) return false;
    let status;
    try {
      status = await withRetries(() => api(`/videos/upload/${encodeURIComponent(record.id)}`),
        { onRetry: (e, wait) => this.retrying(e, wait) });
    } catch (e) {
      if (e instanceof ApiFailure && e.status >= 400 && e.status < 500) {
        remembered.forget(this.fp); // expired, abandoned or unknown: start over
        return false;
      }
      throw e;
    }
    if (status.size !== this.file.size) {
      remembered.forget(this.fp);
      return false;
    }
    this.id = status.upload_id;
    if (status.state === 'complete' && status.result) {
      remembered.forget(this.fp);
      this.bar.value = this.file.size;
      this.finished(status.result);
      return 'done';
    }
    if (status.state !== 'receiving') {
      remembered.forget(this.fp);
      return false;
    }
    this.chunkSize = status.chunk_size;
    this.total = status.total_chunks;
    this.pending = status.missing.slice();
    this.doneBytes = status.received_bytes;
    return true;
  }

  async create() {
    const body = { filename: this.file.name, size: this.file.size };
    if (this.file.type) body.content_type = this.file.type;
    const init = await withRetries(() => api('/videos/init', { method: 'POST', json: body }),
      { onRetry: (e, wait) => this.retrying(e, wait) });
    this.id = init.upload_id;
    this.chunkSize = init.chunk_size;
    this.total = init.total_chunks;
    this.pending = Array.from({ length: this.total }, (_, i) => i);
    this.doneBytes = 0;
    remembered.set(this.fp, { id: this.id, name: this.file.name, size: this.file.size, at: Date.now() });
  }

  // ---- chunks ----

  canSend() {
    return this.state === 'sending' && this.pending.length > 0 && performance.now() >= this.retryAt;
  }

  next() {
    if (this.state !== 'sending') return;
    if (this.pending.length === 0 && this.inFlight.size === 0) {
      this.finalize();
      return;
    }
    schedule();
  }

  sendNext() {
    const index = this.pending.shift();
    const flight = { xhr: null, loaded: 0 };
    this.inFlight.set(index, flight);
    this.sendChunk(index, flight).then(
      () => {
        this.inFlight.delete(index);
        this.failures = 0;
        this.checksumRetries = 0;
        this.showProgress();
        this.next();
      },
      (e) => {
        if (this.inFlight.get(index) === flight) this.inFlight.delete(index);
        if (e.name === 'AbortError') return; // paused or cancelled: the index is put back there
        this.pending.unshift(index);
        this.chunkFailed(e);
      });
  }

  async sendChunk(index, flight) {
    const start = index * this.chunkSize;
    const end = Math.min(start + this.chunkSize, this.file.size);
    const body = this.file.slice(start, end);
    const headers = {};
    if (CAN_HASH) {
      // The chunk is read twice: into memory for WebCrypto, and again as a
      // Blob when sent. Chromium uploads a Blob straight from the file, and
      // an ArrayBuffer through a copy that made uploads ten times slower.
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', await body.arrayBuffer()));
      headers['X-Chunk-Checksum'] = `sha256=${Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('')}`;
    }
    // Paused (or cancelled) while hashing: this flight is over.
    if (this.inFlight.get(index) !== flight || this.state !== 'sending') throw new DOMException('aborted', 'AbortError');
    await new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      flight.xhr = xhr;
      xhr.open('POST', `/videos/upload_chunk/${encodeURIComponent(this.id)}/${index}`);
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      for (const [name, value] of Object.entries({ ...credentialHeaders(), ...headers })) {
        xhr.setRequestHeader(name, value);
      }
      xhr.upload.onprogress = (event) => {
        flight.loaded = event.loaded;
        this.showProgress();
      };
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          this.doneBytes += end - start;
          this.sentChunks++;
          flight.loaded = 0;
          resolve();
        } else {
          reject(failureOf(xhr.status, xhr.responseText));
        }
      };
      xhr.onerror = () => reject(new ApiFailure(0, 'network', 'the connection to the server failed'));
      xhr.ontimeout = () => reject(new ApiFailure(0, 'network', 'the server took too long to answer'));
      xhr.onabort = () => reject(new DOMException('aborted', 'AbortError'));
      xhr.send(body);
    });
  }

  chunkFailed(e) {
    if (this.state !== 'sending') return;
    if (e instanceof ApiFailure && e.transient) {
      // Chunks in flight together fail together (the daemon restarting, the
      // network gone): one wait for all of them, longer each round.
      const now = performance.now();
      if (now < this.retryAt) return;
      const wait = backoffMs(Math.min(this.failures++, 6));
      this.retryAt = now + wait;
      this.retrying(e, wait);
      setTimeout(() => { if (this.state === 'sending') { this.say('Sending…'); this.next(); } }, wait + 10);
      return;
    }
    if (e instanceof ApiFailure && e.code === 'checksum-mismatch' && this.checksumRetries++ < 3) {
      this.say('A chunk arrived damaged; sending it again.', 'retry');
      this.next();
      return;
    }
    if (e instanceof ApiFailure && (e.status === 404 || e.status === 410) && !this.restarted) {
      // The server no longer knows the upload (expired or abandoned).
      this.restarted = true;
      this.abortAll();
      remembered.forget(this.fp);
      this.say('The server had forgotten this upload; starting it again.', 'retry');
      this.start();
      return;
    }
    this.abortAll();
    this.fail(e);
  }

  retrying(e, wait) {
    const reason = e.message.charAt(0).toUpperCase() + e.message.slice(1);
    this.say(`${reason} (${e.code}). Trying again in ${Math.ceil(wait / 1000)} s…`, 'retry');
    this.showProgress();
  }

  abortAll() {
    for (const [index, flight] of this.inFlight) {
      this.pending.unshift(index);
      flight.loaded = 0;
      if (flight.xhr) flight.xhr.abort();
    }
    this.inFlight.clear();
    this.pending = [...new Set(this.pending)].sort((a, b) => a - b);
  }

  // ---- pause, resume, cancel ----

  togglePause() {
    if (this.state === 'sending') {
      this.abortAll();
      this.setState('paused', 'Paused. Chunks already sent stay on the server.');
      this.showProgress();
      schedule();
    } else if (this.state === 'paused') {
      this.retryAt = 0;
      this.setState('sending', 'Sending…');
      this.next();
    }
  }

  async cancel() {
    const was = this.state;
    this.abortAll();
    this.setState('cancelled', 'Cancelling…');
    remembered.forget(this.fp);
    schedule();
    if (this.id && was !== 'done') {
      try {
        await api(`/videos/upload/${encodeURIComponent(this.id)}`, { method: 'DELETE' });
      } catch (e) {
        if (!(e instanceof ApiFailure && e.status === 404)) {
          this.say(`Cancelled here, but the server could not be told: ${e.message}`);
          return;
        }
      }
    }
    this.say('Cancelled. The server has discarded what was sent.');
  }

  // ---- the end ----

  async finalize() {
    this.setState('finalizing', 'All bytes sent; the server is checking and storing the video…');
    this.showProgress();
    try {
      const result = await withRetries(
        () => api(`/videos/finalize/${encodeURIComponent(this.id)}`, { method: 'POST' }),
        { onRetry: (e, wait) => this.retrying(e, wait) });
      remembered.forget(this.fp);
      this.finished(result);
    } catch (e) {
      if (e instanceof ApiFailure && e.status === 409 && e.body && Array.isArray(e.body.missing)) {
        // The server lacks chunks (it lost none it acknowledged; these never landed).
        try {
          const status = await api(`/videos/upload/${encodeURIComponent(this.id)}`);
          this.pending = status.missing.slice();
          this.doneBytes = status.received_bytes;
        } catch (again) {
          this.fail(again);
          return;
        }
        this.setState('sending', `The server is missing ${this.pending.length} chunk(s); sending them.`);
        this.next();
        return;
      }
      this.fail(e);
    }
  }

  finished(result) {
    this.result = result;
    this.bar.value = this.bar.max;
    this.setState('done');
    this.showProgress();
    this.node.dataset.hash = result.hash;
    this.node.dataset.status = result.status;
    let text;
    if (result.status === 'duplicate') {
      const d = result.phash_distance;
      text = d === 0 || d === undefined
        ? 'Already stored: the same bytes were uploaded before.'
        : `Already stored: a near-duplicate of an earlier video (distance ${d}).`;
    } else {
      text = 'Stored as a new video.';
    }
    this.transcode = el('span', { class: 'transcode' });
    this.say(el('span', {}, `${text} `, el('code', { title: 'BLAKE3 content hash' }, result.hash.slice(0, 12)),
      ' · ', this.transcode));
    this.follow(result.hash);
  }

  /** Follows the video's transcode until it is playable. */
  async follow(hash) {
    const link = el('a', { href: `/player?hash=${hash}`, class: 'play' }, 'Play (HLS and DASH)');
    const show = (status, extra) => {
      this.node.dataset.transcode = status;
      this.transcode.textContent = '';
      if (status === 'ready') this.transcode.append(link);
      else if (status === 'failed') this.transcode.append(`Transcode failed${extra ? `: ${extra}` : ''}. `, el('a', { href: `/player?hash=${hash}` }, 'details'));
      else if (status === 'none') this.transcode.append('Not transcoded. ', el('a', { href: `/player?hash=${hash}` }, 'details'));
      else this.transcode.append(`Transcoding: ${extra || status}…`);
    };
    show('queued');
    const stop = events.on((event) => {
      if (event.hash !== hash) return;
      if (event.type === 'transcode.started') show('processing', 'started');
      if (event.type === 'transcode.progress') show('processing', `${Math.round(event.percent)}%`);
      if (event.type === 'transcode.completed') { show('ready'); stop(); }
      if (event.type === 'transcode.failed') show('failed', event.error);
    });
    // The event stream may have missed the start (or be unavailable): ask too.
    for (let n = 0; this.node.dataset.transcode !== 'ready'; n++) {
      try {
        const meta = await api(`/meta/${hash}`);
        const status = meta.transcode ? meta.transcode.status : 'none';
        if (status === 'ready' || status === 'failed' || status === 'none') {
          show(status, meta.transcode && meta.transcode.error);
          if (status !== 'failed') { stop(); return; }
        }
      } catch (_) { /* asked again below */ }
      await sleep(events.state.connected ? 10000 : 3000);
    }
  }

  fail(e) {
    const text = e instanceof ApiFailure ? `${e.message} (${e.code})` : `Something went wrong: ${e.message}`;
    const message = text.charAt(0).toUpperCase() + text.slice(1);
    this.setState('error', message);
    if (e instanceof ApiFailure && e.status >= 400 && e.status < 500 && e.status !== 404) {
      // A refusal that retrying cannot change (too big, not a video ...):
      // the next pick of this file starts a fresh upload.
      remembered.forget(this.fp);
    }
  }
}

function add(files) {
  for (const file of files) {
    const fp = fingerprint(file);
    const same = uploads.find((u) => u.fp === fp && ['starting', 'sending', 'paused', 'finalizing'].includes(u.state));
    if (same) continue; // already on its way
    const upload = new Upload(file);
    uploads.push(upload);
    upload.start();
  }
  showUnfinished();
}

/** Uploads this browser started and did not finish: choose the file again to resume. */
async function showUnfinished() {
  const section = document.getElementById('unfinished-section');
  const target = document.getElementById('unfinished');
  const active = new Set(uploads.map((u) => u.fp));
  const records = remembered.all().filter((r) => !active.has(r.fp));
  target.textContent = '';
  section.hidden = records.length === 0;
  for (const record of records) {
    const item = el('li', {}, el('strong', {}, record.name || 'a file'), ` (${formatBytes(record.size)}) `);
    target.append(item);
    api(`/videos/upload/${encodeURIComponent(record.id)}`).then((status) => {
      if (status.state !== 'receiving') return;
      const pct = Math.floor((status.received_bytes * 100) / Math.max(status.size, 1));
      item.append(el('span', { class: 'muted' }, `${pct}% on the server`));
    }, (e) => {
      if (e instanceof ApiFailure && e.status >= 400 && e.status < 500) {
        remembered.forget(record.fp); // the server no longer has it
        item.remove();
        section.hidden = target.children.length === 0;
      }
    });
  }
}

const input = document.getElementById('file-input');
const zone = document.getElementById('dropzone');
input.addEventListener('change', () => {
  add(Array.from(input.files));
  input.value = ''; // the same file can be chosen again
});
zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
zone.addEventListener('dragleave', () => zone.classList.remove('over'));
zone.addEventListener('drop', (e) => {
  e.preventDefault();
  zone.classList.remove('over');
  add(Array.from(e.dataTransfer.files));
});
window.addEventListener('beforeunload', (e) => {
  if (uploads.some((u) => u.state === 'sending' || u.state === 'finalizing')) e.preventDefault();
});
document.getElementById('checksum-note').textContent = CAN_HASH
  ? 'Each chunk carries its SHA-256 (computed by the browser), which the server checks.'
  : 'This page is not in a secure context (https or localhost), so chunks are sent without a checksum.';
showUnfinished();
