// The browser pages in a real headless Chromium (Debian's, driven by
// playwright-core), against a real vidcache daemon this script starts,
// kills and restarts. Run by tests/api/pages.rs, which generates the videos
// and checks the summary printed as the last line of stdout.
//
//   node pages.mjs --binary B --root R --database URL --port P \
//        --small S.mp4 --large L.mp4 --other O.mp4 --bad B.mp4 --artifacts DIR
//
// Steps, each with screenshots in DIR:
//  1. the 20 s video through the upload page's file input: the progress bar
//     climbs to 100%, the result shows, and the transcode link appears;
//     a file that is not a video shows the server's refusal;
//  2. the player: hls.js and dash.js both play past 2 s without errors, a
//     manual rendition choice is the rendition in use, storyboard previews;
//  3. a page reload in the middle of a throttled upload: choosing the file
//     again resumes it, and no chunk the server had is sent again (counted
//     in the page and in the daemon's own request metrics);
//     then a cancelled upload is gone from the server and the page's memory;
//  4. pause sends nothing until resumed; a daemon restart (SIGKILL) in the
//     middle of an upload: the page retries
//     with backoff and finishes once the daemon is back, again without
//     re-sending what the server had;
//  5. the player's list turns a video's status to ready live, from /events.
import { launchChromium } from './chromium.mjs';
import { Daemon, sleep, until } from './daemon.mjs';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: Object.fromEntries(['binary', 'root', 'database', 'port', 'small', 'large', 'other', 'bad', 'artifacts']
    .map((name) => [name, { type: 'string' }])),
});
for (const name of ['binary', 'root', 'database', 'port', 'small', 'large', 'other', 'bad', 'artifacts']) {
  assert.ok(opt[name], `--${name} is required`);
}
const base = `http://127.0.0.1:${opt.port}`;
mkdirSync(opt.artifacts, { recursive: true });
const summary = { screenshots: [] };

// ---- the daemon ----

const daemon = new Daemon(opt);
const startDaemon = () => daemon.start();
const killDaemon = () => daemon.kill();

/** 200 answers to chunk requests, from the daemon's own metrics. */
async function chunksAccepted() {
  const text = await (await fetch(`${base}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('vidcache_http_request_duration_seconds_count')
      && line.includes('route="/videos/upload_chunk/{upload_id}/{chunk_index}"') && line.includes('status="200"')) {
      total += Number(line.trim().split(/\s+/).pop());
    }
  }
  return total;
}

// ---- the browser ----

await startDaemon();
const browser = await launchChromium(['--autoplay-policy=no-user-gesture-required']);
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(String(e)));
page.on('dialog', (d) => d.accept()); // the "leave the page?" prompt of a reload mid-upload
const cdp = await context.newCDPSession(page);
await cdp.send('Network.enable');
async function throttle(uploadBytesPerSecond) {
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1,
    uploadThroughput: uploadBytesPerSecond || -1,
  });
}

let shot = 0;
async function screenshot(name) {
  const path = `${opt.artifacts}/${String(++shot).padStart(2, '0')}-${name}.png`;
  await page.screenshot({ path, fullPage: true });
  summary.screenshots.push(path);
}

/** Chunk requests the page makes: index -> statuses, split by phase. */
function chunkLog() {
  const log = { requested: [], accepted: new Set() };
  const onRequest = (request) => {
    const m = request.url().match(/\/videos\/upload_chunk\/[^/]+\/(\d+)$/);
    if (m) log.requested.push(Number(m[1]));
  };
  const onResponse = (response) => {
    const m = response.url().match(/\/videos\/upload_chunk\/[^/]+\/(\d+)$/);
    if (m && response.status() === 200) log.accepted.add(Number(m[1]));
  };
  page.on('request', onRequest);
  page.on('response', onResponse);
  log.stop = () => { page.off('request', onRequest); page.off('response', onResponse); };
  return log;
}

const item = (name) => page.locator('#uploads li.upload', { hasText: name }).first();
async function progressOf(name) {
  return item(name).evaluate((li) => {
    const bar = li.querySelector('progress');
    return { value: bar.value, max: bar.max, state: li.dataset.state, text: li.innerText };
  });
}
const basename = (p) => p.split('/').pop();

try {
  // ---- 1. upload the 20 s video and watch the bar ----
  await page.goto(`${base}/`);
  await screenshot('upload-page');
  const small = basename(opt.small);
  await throttle(1_000_000);
  await page.setInputFiles('#file-input', opt.small);
  const samples = [];
  let midShot = false;
  await until('the 20 s upload to finish', async () => {
    const p = await progressOf(small);
    samples.push(p.value / p.max);
    if (!midShot && p.value / p.max > 0.3 && p.value / p.max < 0.9) {
      midShot = true;
      await screenshot('upload-in-progress');
    }
    assert.notEqual(p.state, 'error', p.text);
    return p.state === 'done';
  }, { timeout: 120000, every: 50 });
  await throttle(0);
  const done = await progressOf(small);
  summary.small_progress = { final: done.value / done.max, samples: samples.length,
    intermediate: samples.filter((s) => s > 0 && s < 1).length,
    monotonic: samples.every((s, i) => i === 0 || s >= samples[i - 1]) };
  const smallHash = await item(small).getAttribute('data-hash');
  summary.small = { hash: smallHash, status: await item(small).getAttribute('data-status') };
  await screenshot('upload-done');
  await until('the transcode link on the upload page', async () =>
    (await item(small).getAttribute('data-transcode')) === 'ready', { timeout: 180000, every: 250 });
  await screenshot('upload-transcoded');

  const listed = (await (await fetch(`${base}/videos`)).json()).find((v) => v.hash === smallHash);
  summary.small.listed_hls_url = listed && listed.hls_url;

  // A file that is not a video: the server's refusal, readable on the page.
  const bad = basename(opt.bad);
  await page.setInputFiles('#file-input', opt.bad);
  await until('the refusal of the bad file', async () => (await progressOf(bad)).state === 'error', { timeout: 60000 });
  summary.bad = { text: await item(bad).locator('.message').innerText() };
  await screenshot('not-a-video-refused');

  // ---- 2. the player ----
  await item(small).locator('a.play').click();
  await page.waitForURL(/\/player\?hash=/);
  await page.locator('#stage').waitFor({ state: 'visible' });
  await page.locator('#play-both').click();
  const times = () => page.evaluate(() => ['hls', 'dash'].map((k) => {
    const v = document.getElementById(`${k}-video`);
    return { t: v.currentTime, error: v.error && v.error.code,
      shown: document.getElementById(`${k}-errors`).textContent,
      height: document.getElementById(`${k}-rendition`).dataset.height };
  }));
  await until('both players past 2 s', async () => (await times()).every((p) => p.t > 2), { timeout: 60000 });
  const playing = await times();
  for (const p of playing) assert.ok(p.error === null && p.shown === '', JSON.stringify(p));
  summary.playing = playing;
  await screenshot('player-both-playing');

  // A manual rendition: the lowest for HLS, the highest for DASH, each
  // different from what the player is using now.
  const options = await page.locator('#hls-quality option').evaluateAll((os) => os.map((o) => o.value));
  const heights = options.filter((v) => v !== 'auto').map(Number).sort((a, b) => a - b);
  assert.ok(heights.length >= 2, `two renditions to choose from: ${options}`);
  summary.switches = [];
  for (const [kind, height] of [['hls', heights[0]], ['dash', heights[heights.length - 1]], ['dash', heights[0]]]) {
    await page.selectOption(`#${kind}-quality`, String(height));
    const before = (await times()).find((_, i) => i === (kind === 'hls' ? 0 : 1)).t;
    await until(`${kind} to use ${height}p`, async () =>
      (await page.locator(`#${kind}-rendition`).getAttribute('data-height')) === String(height), { timeout: 30000 });
    // and it keeps playing on the new rendition
    await until(`${kind} to play on at ${height}p`, async () =>
      (await times())[kind === 'hls' ? 0 : 1].t > before + 1, { timeout: 30000 });
    summary.switches.push({ kind, height });
  }
  for (const p of await times()) assert.ok(p.error === null && p.shown === '', JSON.stringify(p));
  await screenshot('player-renditions-switched');

  // Storyboard previews on the scrubber.
  const bar = await page.locator('#seek').boundingBox();
  await page.mouse.move(bar.x + bar.width * 0.6, bar.y + bar.height / 2);
  await until('a storyboard preview', async () => page.evaluate(() => {
    const p = document.getElementById('preview');
    return !p.hidden && p.style.backgroundImage.includes('storyboard');
  }), { timeout: 10000 });
  summary.storyboard_preview = await page.locator('#preview-time').textContent();
  await screenshot('player-storyboard-preview');
  const row = page.locator(`#videos a[data-hash="${smallHash}"]`);
  summary.list_row = {
    badge: await row.locator('.badge').getAttribute('data-status'),
    thumbnail_width: await row.locator('img').evaluate((img) => img.naturalWidth),
  };

  // ---- 3. reload in the middle of an upload ----
  await page.goto(`${base}/`);
  const large = basename(opt.large);
  const acceptedBefore = await chunksAccepted();
  await throttle(1_000_000);
  const beforeReload = chunkLog();
  await page.setInputFiles('#file-input', opt.large);
  await until('a third of the large upload', async () => {
    const p = await progressOf(large);
    return p.value / p.max > 0.35;
  }, { timeout: 120000 });
  await screenshot('large-before-reload');
  await page.reload();
  beforeReload.stop();
  await throttle(1_000_000);
  await page.locator('#unfinished-section').waitFor({ state: 'visible' });
  await screenshot('after-reload-unfinished-listed');
  const afterReload = chunkLog();
  await page.setInputFiles('#file-input', opt.large);
  const saidResuming = await until('the page to say it resumes', async () =>
    /Resuming: \d+ of \d+ chunks/.test((await progressOf(large)).text), { timeout: 15000 }).catch(() => false);
  await screenshot('large-resuming');
  await until('the large upload to finish', async () => {
    const p = await progressOf(large);
    assert.notEqual(p.state, 'error', p.text);
    return p.state === 'done';
  }, { timeout: 120000 });
  afterReload.stop();
  await throttle(0);
  await screenshot('large-resumed-and-done');
  summary.large = {
    hash: await item(large).getAttribute('data-hash'),
    status: await item(large).getAttribute('data-status'),
    accepted_before_reload: [...beforeReload.accepted].sort((a, b) => a - b),
    requested_after_reload: afterReload.requested.slice().sort((a, b) => a - b),
    resent: afterReload.requested.filter((i) => beforeReload.accepted.has(i)),
    daemon_accepted: (await chunksAccepted()) - acceptedBefore,
    said_resuming: saidResuming,
  };

  // ---- 3b. cancel: the small file again, cancelled after its first chunk ----
  await page.reload();
  await throttle(300_000);
  const cancelLog = chunkLog();
  let cancelledId = null;
  const onCancelRequest = (request) => {
    const m = request.url().match(/\/videos\/upload_chunk\/([^/]+)\//);
    if (m) cancelledId = m[1];
  };
  page.on('request', onCancelRequest);
  await page.setInputFiles('#file-input', opt.small);
  await until('a chunk of the upload to cancel', async () => cancelLog.accepted.size > 0, { timeout: 60000 });
  await item(small).getByRole('button', { name: 'Cancel' }).click();
  await until('the page to say it cancelled', async () => /Cancelled\. The server has discarded/.test((await progressOf(small)).text),
    { timeout: 30000 });
  page.off('request', onCancelRequest);
  cancelLog.stop();
  await throttle(0);
  await screenshot('cancelled');
  summary.cancel = {
    upload_id: cancelledId,
    server_status: (await fetch(`${base}/videos/upload/${cancelledId}`)).status,
    remembered: await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('vidcache.upload.')).length),
  };

  // ---- 4. pause, then a daemon restart in the middle of an upload ----
  const other = basename(opt.other);
  await throttle(1_000_000);
  const beforeKill = chunkLog();
  await page.setInputFiles('#file-input', opt.other);
  await until('some of the other upload', async () => (await progressOf(other)).value / (await progressOf(other)).max > 0.1,
    { timeout: 120000 });
  await item(other).getByRole('button', { name: 'Pause' }).click();
  await until('the upload to pause', async () => (await progressOf(other)).state === 'paused', { timeout: 10000 });
  const requestsAtPause = beforeKill.requested.length;
  await sleep(1500);
  await screenshot('other-paused');
  summary.pause = { requests_while_paused: beforeKill.requested.length - requestsAtPause };
  await item(other).getByRole('button', { name: 'Resume' }).click();
  await until('a third of the other upload', async () => (await progressOf(other)).value / (await progressOf(other)).max > 0.35,
    { timeout: 120000 });
  await killDaemon();
  const acceptedAtKill = new Set(beforeKill.accepted);
  beforeKill.stop();
  const afterKill = chunkLog();
  await until('the page to say it is retrying', async () => /Trying again/.test((await progressOf(other)).text),
    { timeout: 30000 });
  await screenshot('daemon-down-retrying');
  await sleep(1500);
  await startDaemon();
  await until('the other upload to finish after the restart', async () => {
    const p = await progressOf(other);
    assert.notEqual(p.state, 'error', p.text);
    return p.state === 'done';
  }, { timeout: 180000 });
  afterKill.stop();
  await throttle(0);
  await screenshot('other-done-after-restart');
  const otherHash = await item(other).getAttribute('data-hash');
  summary.other = {
    hash: otherHash,
    status: await item(other).getAttribute('data-status'),
    accepted_before_kill: [...acceptedAtKill].sort((a, b) => a - b),
    requested_after_kill: afterKill.requested.slice().sort((a, b) => a - b),
    resent: afterKill.requested.filter((i) => acceptedAtKill.has(i)),
  };

  // ---- 5. the list follows the transcode live ----
  await page.goto(`${base}/player`);
  await page.evaluate(() => { window.__sameDocument = true; });
  const badge = page.locator(`#videos a[data-hash="${otherHash}"] .badge`);
  await badge.waitFor();
  const seen = [await badge.getAttribute('data-status')];
  await screenshot('list-while-transcoding');
  await until('the list to show the other video ready', async () => {
    const status = await badge.getAttribute('data-status');
    if (status !== seen[seen.length - 1]) seen.push(status);
    return status === 'ready';
  }, { timeout: 180000, every: 100 });
  summary.live_list = { statuses: seen, same_document: await page.evaluate(() => window.__sameDocument === true) };
  await screenshot('list-ready');
  summary.page_errors = pageErrors;
} catch (e) {
  await screenshot('failure').catch(() => {});
  summary.page_errors = pageErrors;
  summary.failure = String(e && e.stack || e);
} finally {
  await browser.close();
  await killDaemon();
}
console.log(JSON.stringify(summary));
