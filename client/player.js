// The player page: the list of videos with their transcode status kept live
// from GET /events, and one video played as HLS (hls.js) and DASH (dash.js)
// side by side, with the rendition in use, a manual choice, and storyboard
// previews on a scrubber that seeks both.
'use strict';

const listNode = document.getElementById('videos');
const rows = new Map(); // hash -> {entry, link, badge}
let watching = null; // the video on the stage: {hash, hls, dash, ...}

// ---- the list ----

function statusText(status, percent) {
  switch (status) {
    case 'ready': return 'ready';
    case 'processing': return percent === undefined ? 'transcoding' : `transcoding ${Math.round(percent)}%`;
    case 'queued': return 'queued';
    case 'failed': return 'transcode failed';
    case 'uploaded': case 'none': return 'stored';
    default: return status || 'unknown';
  }
}

function setBadge(hash, status, percent) {
  const row = rows.get(hash);
  if (!row) return;
  row.badge.dataset.status = status;
  row.badge.textContent = statusText(status, percent);
}

function rowFor(entry) {
  const badge = el('span', { class: 'badge' });
  const facts = [formatDuration(entry.duration_s)];
  if (entry.width && entry.height) facts.push(`${entry.width}×${entry.height}`);
  const link = el('a', { href: `/player?hash=${entry.hash}`, 'data-hash': entry.hash },
    el('img', { src: entry.thumbnail_url, alt: '', loading: 'lazy', width: 96, height: 54 }),
    el('span', {},
      el('span', { class: 'title' }, entry.filename || entry.hash.slice(0, 12)),
      el('br'),
      el('span', { class: 'sub' }, `${facts.join(' · ')} `, badge)));
  link.addEventListener('click', (e) => {
    if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    history.pushState({}, '', link.href);
    watch(entry.hash);
  });
  rows.set(entry.hash, { entry, link, badge });
  setBadge(entry.hash, entry.status);
  return el('li', {}, link);
}

async function loadList() {
  let entries;
  try {
    entries = await withRetries(() => api('/videos?limit=200'));
  } catch (e) {
    listNode.replaceChildren(el('li', { class: 'errors' }, `The list cannot be loaded: ${e.message}`));
    return;
  }
  rows.clear();
  const seen = new Set();
  const items = [];
  for (const entry of entries) {
    // Uploads still arriving have no hash yet; duplicates share one video.
    if (!entry.hash || seen.has(entry.hash)) continue;
    seen.add(entry.hash);
    items.push(rowFor(entry));
  }
  listNode.replaceChildren(...items);
  document.getElementById('no-videos').hidden = items.length > 0;
  markCurrent();
}

function markCurrent() {
  for (const [hash, row] of rows) {
    if (watching && hash === watching.hash) row.link.setAttribute('aria-current', 'true');
    else row.link.removeAttribute('aria-current');
  }
}

let reloadTimer = null;
function reloadSoon() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(loadList, 500);
}

events.on((event) => {
  switch (event.type) {
    case 'upload.completed': case 'video.duplicate': case 'video.deleted':
      reloadSoon();
      break;
    case 'transcode.started': setBadge(event.hash, 'processing'); break;
    case 'transcode.progress': setBadge(event.hash, 'processing', event.percent); break;
    case 'transcode.completed': setBadge(event.hash, 'ready'); break;
    case 'transcode.failed': setBadge(event.hash, 'failed'); break;
    default: break;
  }
  if (watching && event.hash === watching.hash) watching.onEvent(event);
});

// ---- one video ----

const stage = document.getElementById('stage');
const statusLine = document.getElementById('watch-status');
const title = document.getElementById('watch-title');

function describe(rendition) {
  if (!rendition) return '–';
  const kbps = rendition.bitrate / 1000;
  const rate = kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mb/s` : `${Math.round(kbps)} kb/s`;
  return `${rendition.height}p · ${rate}`;
}

/** Shows the rendition a player is using (and keeps it readable by tests). */
function showRendition(kind, rendition) {
  const node = document.getElementById(`${kind}-rendition`);
  node.textContent = `In use: ${describe(rendition)}`;
  node.dataset.height = rendition ? rendition.height : '';
}

function reportError(kind, message) {
  const node = document.getElementById(`${kind}-errors`);
  node.textContent = message;
  node.dataset.count = String(Number(node.dataset.count || 0) + 1);
}

function fillQualities(kind, renditions, choose) {
  const select = document.getElementById(`${kind}-quality`);
  select.replaceChildren(el('option', { value: 'auto' }, 'Auto'),
    ...renditions.map((r) => el('option', { value: String(r.height) }, describe(r))));
  select.onchange = () => choose(select.value === 'auto' ? null : Number(select.value));
}

function startHls(url, video) {
  if (window.Hls && Hls.isSupported()) {
    const hls = new Hls({ enableWorker: true });
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      const levels = hls.levels.map((l) => ({ height: l.height, bitrate: l.bitrate }));
      fillQualities('hls', levels.slice().reverse(), (height) => {
        // currentLevel switches at once (flushing the buffer); -1 is automatic.
        hls.currentLevel = height === null ? -1 : hls.levels.findIndex((l) => l.height === height);
      });
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_, data) => {
      const level = hls.levels[data.level];
      showRendition('hls', level && { height: level.height, bitrate: level.bitrate });
    });
    let recovered = false;
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (!data.fatal) return;
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !recovered) {
        recovered = true;
        hls.recoverMediaError();
        return;
      }
      reportError('hls', `hls.js: ${data.details}`);
    });
    hls.loadSource(url);
    hls.attachMedia(video);
    return () => hls.destroy();
  }
  if (video.canPlayType('application/vnd.apple.mpegurl')) {
    video.src = url; // Safari plays HLS itself; it chooses the rendition
    document.getElementById('hls-quality').disabled = true;
    return () => { video.removeAttribute('src'); video.load(); };
  }
  reportError('hls', 'This browser cannot play HLS (no MediaSource).');
  return () => {};
}

function startDash(url, video) {
  if (!window.dashjs || !(window.MediaSource || window.ManagedMediaSource)) {
    reportError('dash', 'This browser cannot play DASH (no MediaSource).');
    return () => {};
  }
  const player = dashjs.MediaPlayer().create();
  const events = dashjs.MediaPlayer.events;
  player.updateSettings({ debug: { logLevel: (dashjs.Debug && dashjs.Debug.LOG_LEVEL_WARNING) || 3 } });
  const asRendition = (r) => r && { height: r.height, bitrate: r.bandwidth, index: r.index };
  player.on(events.STREAM_INITIALIZED, () => {
    const reps = player.getRepresentationsByType('video').map(asRendition);
    fillQualities('dash', reps.slice().sort((a, b) => b.bitrate - a.bitrate), (height) => {
      const auto = height === null;
      player.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: auto } } } });
      if (!auto) {
        const rep = player.getRepresentationsByType('video').find((r) => r.height === height);
        if (rep) player.setRepresentationForTypeByIndex('video', rep.index, true);
      }
    });
    showRendition('dash', asRendition(player.getCurrentRepresentationForType('video')));
  });
  player.on(events.QUALITY_CHANGE_RENDERED, (e) => {
    if (e.mediaType === 'video') showRendition('dash', asRendition(e.newRepresentation));
  });
  player.on(events.ERROR, (e) => {
    const error = e.error || {};
    reportError('dash', `dash.js: ${error.message || error.code || 'error'}`);
  });
  player.initialize(video, url, false);
  return () => player.destroy();
}

/** Parses a storyboard WebVTT: cues of `sprite.jpg#xywh=x,y,w,h`. */
function parseStoryboard(text, base) {
  const time = (t) => {
    const parts = t.trim().split(':').map(Number);
    return parts.reduce((acc, p) => acc * 60 + p, 0);
  };
  const cues = [];
  const blocks = text.replace(/\r/g, '').split('\n\n');
  for (const block of blocks) {
    const lines = block.split('\n').filter(Boolean);
    const at = lines.findIndex((l) => l.includes('-->'));
    if (at < 0 || !lines[at + 1]) continue;
    const [start, end] = lines[at].split('-->').map((t) => time(t.split(' ').filter(Boolean)[0] || t));
    const [file, fragment] = lines[at + 1].split('#xywh=');
    if (!fragment) continue;
    const [x, y, w, h] = fragment.split(',').map(Number);
    cues.push({ start, end, url: new URL(file, base).href, x, y, w, h });
  }
  return cues;
}

async function loadStoryboard(url) {
  const note = document.getElementById('storyboard-note');
  if (!url) return [];
  try {
    const response = await fetch(url);
    if (!response.ok) return [];
    const cues = parseStoryboard(await response.text(), new URL(url, location.href));
    if (cues.length) note.textContent = 'Hover over or drag the bar for previews.';
    return cues;
  } catch (_) {
    return [];
  }
}

function setUpScrubber(duration, cues, videos) {
  const seek = document.getElementById('seek');
  const preview = document.getElementById('preview');
  const previewTime = document.getElementById('preview-time');
  const seekTime = document.getElementById('seek-time');
  const scrub = document.getElementById('scrub');
  seek.max = String(duration || 1);
  seek.value = '0';
  let dragging = false;

  const showPreview = (t) => {
    const cue = cues.find((c) => t >= c.start && t < c.end) || cues[cues.length - 1];
    if (!cue) return;
    preview.hidden = false;
    preview.style.width = `${cue.w}px`;
    preview.style.height = `${cue.h}px`;
    preview.style.backgroundImage = `url("${cue.url}")`;
    preview.style.backgroundPosition = `-${cue.x}px -${cue.y}px`;
    const box = seek.getBoundingClientRect();
    const left = (t / (duration || 1)) * box.width;
    preview.style.left = `${Math.max(cue.w / 2, Math.min(box.width - cue.w / 2, left))}px`;
    previewTime.textContent = formatDuration(t);
  };
  const timeAt = (clientX) => {
    const box = seek.getBoundingClientRect();
    return Math.max(0, Math.min(1, (clientX - box.left) / box.width)) * (duration || 0);
  };
  seek.oninput = () => {
    dragging = true;
    const t = Number(seek.value);
    seekTime.textContent = formatDuration(t);
    showPreview(t);
  };
  seek.onchange = () => {
    dragging = false;
    for (const v of videos) v.currentTime = Number(seek.value);
    preview.hidden = true;
  };
  scrub.onpointermove = (e) => showPreview(timeAt(e.clientX));
  scrub.onpointerleave = () => { if (!dragging) preview.hidden = true; };
  videos[0].ontimeupdate = () => {
    if (dragging) return;
    seek.value = String(videos[0].currentTime);
    seekTime.textContent = formatDuration(videos[0].currentTime);
  };
  const both = document.getElementById('play-both');
  both.onclick = () => {
    const play = videos.every((v) => v.paused);
    for (const v of videos) {
      if (play) v.play().catch(() => {});
      else v.pause();
    }
    both.textContent = play ? 'Pause both' : 'Play both';
  };
}

function stopWatching() {
  if (!watching) return;
  for (const stop of watching.stops) stop();
  watching = null;
}

async function watch(hash) {
  stopWatching();
  const state = { hash, stops: [], started: false, onEvent: () => {} };
  watching = state;
  markCurrent();
  stage.hidden = true;
  for (const kind of ['hls', 'dash']) {
    document.getElementById(`${kind}-errors`).textContent = '';
    document.getElementById(`${kind}-rendition`).textContent = '–';
  }
  const row = rows.get(hash);
  title.textContent = row ? row.entry.filename : `Video ${hash.slice(0, 12)}`;
  document.title = `${title.textContent} · vidcache`;
  statusLine.textContent = 'Loading…';

  let meta;
  try {
    meta = await withRetries(() => api(`/meta/${encodeURIComponent(hash)}`));
  } catch (e) {
    statusLine.textContent = e.status === 404 ? 'No video with this hash is stored.' : `It cannot be loaded: ${e.message}`;
    return;
  }
  if (watching !== state) return;
  const transcode = meta.transcode || { status: 'none' };
  document.getElementById('facts').textContent = [
    `${meta.width}×${meta.height}`, meta.video_codec, meta.audio_codec, formatDuration(meta.duration_s),
    formatBytes(meta.size_bytes), `BLAKE3 ${hash}`,
  ].filter(Boolean).join(' · ');

  if (transcode.status !== 'ready') {
    const waiting = {
      queued: 'The transcode is queued; the players appear when it is ready.',
      processing: 'Transcoding; the players appear when it is ready.',
      failed: `The transcode failed: ${transcode.error || 'unknown error'}.`,
      none: 'This video has not been transcoded.',
    };
    statusLine.textContent = waiting[transcode.status] || `Transcode: ${transcode.status}`;
    state.onEvent = (event) => {
      if (event.type === 'transcode.progress') statusLine.textContent = `Transcoding: ${Math.round(event.percent)}%…`;
      if (event.type === 'transcode.failed') statusLine.textContent = `The transcode failed: ${event.error}.`;
      if (event.type === 'transcode.completed' && watching === state) watch(hash);
    };
    if (transcode.status === 'queued' || transcode.status === 'processing') {
      // In case the event stream is down, ask now and then too.
      const timer = setInterval(async () => {
        const again = await api(`/meta/${encodeURIComponent(hash)}`).catch(() => null);
        if (again && again.transcode && again.transcode.status === 'ready' && watching === state) watch(hash);
      }, events.state.connected ? 15000 : 4000);
      state.stops.push(() => clearInterval(timer));
    }
    return;
  }

  statusLine.textContent = '';
  stage.hidden = false;
  const hlsVideo = document.getElementById('hls-video');
  const dashVideo = document.getElementById('dash-video');
  for (const video of [hlsVideo, dashVideo]) {
    const kind = video === hlsVideo ? 'hls' : 'dash';
    video.onerror = () => reportError(kind, `The video element failed: ${video.error ? video.error.message || video.error.code : ''}`);
  }
  state.stops.push(startHls(transcode.hls_url, hlsVideo));
  state.stops.push(startDash(transcode.dash_url, dashVideo));
  const cues = await loadStoryboard(transcode.storyboard_url);
  if (watching !== state) return;
  setUpScrubber(meta.duration_s, cues, [hlsVideo, dashVideo]);
}

window.addEventListener('popstate', () => {
  const hash = new URLSearchParams(location.search).get('hash');
  if (hash) watch(hash);
  else { stopWatching(); stage.hidden = true; markCurrent(); }
});

(async () => {
  await loadList();
  const hash = new URLSearchParams(location.search).get('hash');
  if (hash) watch(hash);
  else statusLine.textContent = 'Choose a video from the list.';
})();
