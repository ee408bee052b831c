// Section 8 in a real Chromium, against a daemon with API keys: a signed
// upload URL opens the upload page, which uploads with it and no key (once:
// the second use is refused); then hls.js and dash.js play the video through
// a playback token in the media path, and fail cleanly on an expired one.
// Run by tests/api/pages.rs, which checks the summary printed last.
//
//   node signed_pages.mjs --binary B --root R --database URL --port P --video V.mp4 --artifacts DIR
import { launchChromium } from './chromium.mjs';
import { Daemon, until } from './daemon.mjs';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const NAMES = ['binary', 'root', 'database', 'port', 'video', 'artifacts'];
const { values: opt } = parseArgs({ options: Object.fromEntries(NAMES.map((n) => [n, { type: 'string' }])) });
for (const name of NAMES) assert.ok(opt[name], `--${name} is required`);
mkdirSync(opt.artifacts, { recursive: true });
const harnessJs = readFileSync(new URL('./players_harness.js', import.meta.url));
const SECRET = 'signed-pages-server-secret-0123456789';
const KEY = 'Basic ' + Buffer.from('backend:backend-secret').toString('base64');
const summary = { screenshots: [], runs: [] };

const daemon = new Daemon({
  ...opt,
  env: {
    VIDCACHE__AUTH__API_KEYS: JSON.stringify([{ id: 'backend', key: 'backend-secret', project_id: 'web' }]),
    VIDCACHE__AUTH__PRESIGN_SECRET: SECRET,
  },
});
const base = daemon.base;
const asBackend = (path, init = {}) =>
  fetch(`${base}${path}`, { ...init, headers: { authorization: KEY, ...(init.headers || {}) } });
await daemon.start();
const browser = await launchChromium(['--autoplay-policy=no-user-gesture-required']);
const pageErrors = [];
let page;
let shot = 0;
async function screenshot(name) {
  const path = `${opt.artifacts}/${String(++shot).padStart(2, '0')}-${name}.png`;
  await page.screenshot({ path });
  summary.screenshots.push(path);
}

try {
  page = await (await browser.newContext()).newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));

  // ---- 1. the upload page through a signed upload URL, with no key ----
  const signed = await (await asBackend('/api/v1/uploads', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ content_type: 'video/*', meta: { from: 'signed-page' } }),
  })).json();
  assert.ok(signed.url, JSON.stringify(signed));
  summary.anonymous_listing = (await fetch(`${base}/videos`)).status;
  await page.goto(signed.url);
  await page.setInputFiles('#file-input', opt.video);
  const item = page.locator('#uploads li.upload').first();
  await until('the signed upload to finish', async () => {
    const state = await item.getAttribute('data-state');
    assert.notEqual(state, 'error', await item.innerText());
    return state === 'done';
  }, { timeout: 120000, every: 100 });
  await screenshot('signed-upload-done');
  const hash = await item.getAttribute('data-hash');
  summary.uploaded = { hash, upload_id: signed.id };
  const listed = await (await asBackend('/videos')).json();
  summary.uploaded.listed = listed.some((v) => v.hash === hash);
  // The URL worked once: a second use is refused.
  const again = await fetch(`${base}/videos/init`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'upload-token': signed.token },
    body: JSON.stringify({ filename: 'again.mp4', size: 10 }),
  });
  summary.second_use = { status: again.status, code: (await again.json()).code };

  // ---- 2. signed playback in hls.js and dash.js ----
  await until('the transcode', async () => {
    const meta = await (await asBackend(`/meta/${hash}`)).json();
    assert.notEqual(meta.transcode.status, 'failed', JSON.stringify(meta.transcode));
    return meta.transcode.status === 'ready';
  }, { timeout: 300000, every: 500 });
  const playback = await (await asBackend(`/api/v1/videos/${hash}/playback?ttl=120`)).json();
  summary.playback_hls_url = playback.hls_url;
  summary.unsigned_status = (await fetch(`${base}/media/${hash}/hls/master.m3u8`)).status;
  await page.route(`${base}/__players/**`, (route) => {
    const name = new URL(route.request().url()).pathname.split('/').pop();
    if (name === 'harness.html') {
      return route.fulfill({ contentType: 'text/html', body: `<!doctype html><meta charset="utf-8"><body>
        <video id="v" muted playsinline width="640"></video>
        <script src="/client/vendor/hls.min.js"></script>
        <script src="/client/vendor/dash.mediaplayer.min.js"></script><script src="harness.js"></script></body>` });
    }
    if (name === 'harness.js') return route.fulfill({ contentType: 'text/javascript', body: harnessJs });
    return route.fulfill({ status: 404, body: '' });
  });
  const state = () => page.evaluate(() => window.vc.state());
  // An expired token made with the documented recipe (README, "Signed playback").
  const expires = Math.floor(Date.now() / 1000) - 5;
  const mac = createHmac('sha256', SECRET).update(`vidcache playback\0${hash}\0${expires}`).digest('hex').slice(0, 32);
  const expired = `${expires}-${mac}`;
  for (const [player, url] of [['hls', playback.hls_url], ['dash', playback.dash_url]]) {
    const run = { player };
    await page.goto(`${base}/__players/harness.html`);
    await page.evaluate(([p, u]) => window.vc.open(p, u, 0), [player, `${base}${url}`]);
    await until(`${player} to play through the token`, async () => {
      const s = await state();
      assert.deepEqual(s.errors, [], `${player}: ${JSON.stringify(s)}`);
      return s.t > 2;
    }, { timeout: 60000 });
    run.played_to = (await state()).t;
    await screenshot(`${player}-signed`);
    // The same video through an expired token: an error, no picture.
    await page.goto(`${base}/__players/harness.html`);
    const stale = url.replace(/\/media\/t\/[^/]+\//, `/media/t/${expired}/`);
    await page.evaluate(([p, u]) => { window.vc.open(p, u, 0).catch(() => {}); }, [player, `${base}${stale}`]);
    await until(`${player} to report the expired token`, async () => (await state()).errors.length > 0, { timeout: 30000 });
    const s = await state();
    run.expired = { errors: s.errors, t: s.t };
    summary.runs.push(run);
  }
  summary.expired_status = (await fetch(`${base}${playback.hls_url.replace(/\/media\/t\/[^/]+\//, `/media/t/${expired}/`)}`)).status;
  summary.page_errors = pageErrors;
} catch (e) {
  if (page) await screenshot('failure').catch(() => {});
  summary.page_errors = pageErrors;
  summary.failure = String(e && e.stack || e);
} finally {
  await browser.close();
  await daemon.kill();
}
console.log(JSON.stringify(summary));
