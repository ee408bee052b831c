// What both pages share: calling the API, retrying with backoff, the event
// stream, and formatting. Plain browser JavaScript, no build step.
'use strict';

/** An answer of the API that was not a success, or no answer at all. */
class ApiFailure extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status; // 0 when the request never got an answer
    this.code = code;
    this.body = body || null;
  }
  /** Worth trying again: no answer, the server busy or briefly failing, or
   *  a chunk the server is still receiving (from a request cut off by a
   *  reload or a pause) or an upload it is committing. */
  get transient() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500
      || this.code === 'chunk-in-progress' || this.code === 'upload-busy';
  }
}

/** Reads the `{code, message}` of an error answer (any body, any type). */
function failureOf(status, text) {
  let body = null;
  try { body = JSON.parse(text); } catch (_) { /* not JSON: a proxy's page */ }
  const code = (body && body.code) || `http-${status}`;
  const message = (body && body.message) || `the server answered ${status}`;
  return new ApiFailure(status, code, message, body);
}

/** A signed upload URL's token (`/?upload_token=...`, minted by a backend
 *  with `POST /api/v1/uploads`): sent with every call of the upload it
 *  opens, in place of an API key. */
const UPLOAD_TOKEN = new URLSearchParams(window.location.search).get('upload_token');

/** Headers that carry the page's credential, if it has one. */
function credentialHeaders() {
  return UPLOAD_TOKEN ? { 'Upload-Token': UPLOAD_TOKEN } : {};
}

/** `fetch` for JSON endpoints: the parsed body, or an ApiFailure. */
async function api(path, options = {}) {
  const init = {
    ...options,
    headers: { Accept: 'application/json', ...credentialHeaders(), ...(options.headers || {}) },
  };
  if (options.json !== undefined) {
    init.body = JSON.stringify(options.json);
    init.headers['Content-Type'] = 'application/json';
    delete init.json;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiFailure(0, 'network', 'the server cannot be reached');
  }
  const text = await response.text().catch(() => '');
  if (!response.ok) throw failureOf(response.status, text);
  if (response.status === 204 || text === '') return null;
  return JSON.parse(text);
}

/** Waits `ms`, or less if `signal` aborts (which then throws AbortError). */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) return reject(new DOMException('aborted', 'AbortError'));
    const timer = setTimeout(resolve, ms);
    if (signal) {
      signal.addEventListener('abort', () => {
        clearTimeout(timer);
        reject(new DOMException('aborted', 'AbortError'));
      }, { once: true });
    }
  });
}

/** Exponential backoff with full jitter: 0.5 s, 1 s, 2 s ... capped at 30 s. */
function backoffMs(attempt) {
  const cap = Math.min(30000, 500 * 2 ** attempt);
  return cap / 2 + Math.random() * cap / 2;
}

/**
 * Calls `attempt()` until it succeeds or fails for a reason that retrying
 * cannot fix. `onRetry(failure, waitMs, n)` is told of each wait.
 */
async function withRetries(attempt, { signal, onRetry } = {}) {
  for (let n = 0; ; n++) {
    try {
      return await attempt();
    } catch (e) {
      if (!(e instanceof ApiFailure) || !e.transient) throw e;
      const wait = backoffMs(Math.min(n, 6));
      if (onRetry) onRetry(e, wait, n + 1);
      await sleep(wait, signal);
    }
  }
}

/**
 * One shared `GET /events` stream per page (browsers allow few connections
 * per host, and chunks need them). `on(listener)` hears every event.
 */
const events = (() => {
  const listeners = new Set();
  const kinds = ['upload.completed', 'video.duplicate', 'transcode.started', 'transcode.progress',
    'transcode.completed', 'transcode.failed', 'video.deleted', 'ingest.failed'];
  let source = null;
  const state = { connected: false };
  function open() {
    if (source || typeof EventSource === 'undefined') return;
    source = new EventSource('/events');
    source.onopen = () => { state.connected = true; };
    source.onerror = () => { state.connected = false; }; // EventSource reconnects by itself
    for (const kind of kinds) {
      source.addEventListener(kind, (message) => {
        let event;
        try { event = JSON.parse(message.data); } catch (_) { return; }
        for (const listener of listeners) listener(event);
      });
    }
  }
  return {
    state,
    on(listener) { listeners.add(listener); open(); return () => listeners.delete(listener); },
  };
})();

function formatBytes(n) {
  if (!Number.isFinite(n)) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i === 0 || n >= 100 ? 0 : 1)} ${units[i]}`;
}

function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  seconds = Math.round(seconds);
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

/** Makes an element: `el('a', {href: '/'}, 'text', child)`. */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}
