// Shaka Player, hls.js and dash.js in Debian's Chromium against a real
// vidcache daemon (this script starts it with the default x264 preset, whose
// B frames are what made segments start with non-IDR I frames): each player
// plays the HLS master and the DASH MPD of a transcoded 20 s 720p video from
// its start and from the middle, seeks, and switches to every video
// rendition with ABR off; each rendition must become the one decoded
// (videoHeight) and play on, with no player error. Then the player page:
// "Play both" pressed 0.5, 1, 2, 3 and 4 s after load, both videos pass 5 s.
// Run by tests/api/pages.rs, which checks the summary printed last.
//
//   node players.mjs --binary B --root R --database URL --port P --video V.mp4 --artifacts DIR
import { launchChromium } from './chromium.mjs';
import { Daemon, sleep, until } from './daemon.mjs';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';

const NAMES = ['binary', 'root', 'database', 'port', 'video', 'artifacts'];
const { values: opt } = parseArgs({ options: Object.fromEntries(NAMES.map((n) => [n, { type: 'string' }])) });
for (const name of NAMES) assert.ok(opt[name], `--${name} is required`);
mkdirSync(opt.artifacts, { recursive: true });
const require = createRequire(import.meta.url);
const shakaJs = readFileSync(require.resolve('shaka-player/dist/shaka-player.compiled.js'));
const harnessJs = readFileSync(new URL('./players_harness.js', import.meta.url));
const summary = { screenshots: [], runs: [], play_both: [] };

const daemon = new Daemon({ ...opt, ladder: '720:3000,480:1500,240:400', preset: 'veryfast' });
const base = daemon.base;
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
  // ---- a transcoded video, with the daemon's default preset ----
  const init = await (await fetch(`${base}/upload/init`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ url: 'https://example.com/players.mp4', bucket: 'videos' }),
  })).json();
  const stored = await (await fetch(`${base}/upload/${init.upload_id}`, {
    method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: readFileSync(opt.video),
  })).json();
  const hash = stored.hash;
  assert.ok(hash, JSON.stringify(stored));
  await until('the transcode', async () => {
    const meta = await (await fetch(`${base}/meta/${hash}`)).json();
    assert.notEqual(meta.transcode.status, 'failed', JSON.stringify(meta.transcode));
    return meta.transcode.status === 'ready';
  }, { timeout: 300000, every: 500 });
  summary.hash = hash;

  const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  // The harness page is served as if by the daemon (same origin as the media).
  await page.route(`${base}/__players/**`, (route) => {
    const name = new URL(route.request().url()).pathname.split('/').pop();
    if (name === 'harness.html') {
      return route.fulfill({ contentType: 'text/html', body: `<!doctype html><meta charset="utf-8"><body>
        <video id="v" muted playsinline width="640"></video>
        <script src="shaka.js"></script><script src="/client/vendor/hls.min.js"></script>
        <script src="/client/vendor/dash.mediaplayer.min.js"></script><script src="harness.js"></script></body>` });
    }
    if (name === 'shaka.js') return route.fulfill({ contentType: 'text/javascript', body: shakaJs });
    if (name === 'harness.js') return route.fulfill({ contentType: 'text/javascript', body: harnessJs });
    return route.fulfill({ status: 404, body: '' });
  });
  const state = () => page.evaluate(() => window.vc.state());
  const noErrors = async (what) => {
    const s = await state();
    assert.deepEqual(s.errors, [], `${what}: ${JSON.stringify(s)}`);
    return s;
  };
  const playsPast = (what, t, timeout = 30000) => until(what, async () => {
    const s = await noErrors(what);
    return s.t > t;
  }, { timeout, every: 100 });

  const manifests = { hls: `${base}/media/${hash}/hls/master.m3u8`, dash: `${base}/media/${hash}/dash/manifest.mpd` };
  for (const [player, kind] of [['shaka', 'hls'], ['shaka', 'dash'], ['hls', 'hls'], ['dash', 'dash']]) {
    const run = { player, manifest: kind, switched: [] };
    const label = `${player} on ${kind}`;
    // From the start.
    await page.goto(`${base}/__players/harness.html`);
    await page.evaluate(([p, url]) => window.vc.open(p, url, 0), [player, manifests[kind]]);
    await playsPast(`${label} to play from the start`, 3);
    run.heights = await page.evaluate(() => window.vc.heights());
    assert.deepEqual(run.heights, [240, 480, 720], `${label}: every rung listed`);
    // Every rendition, each decoded and playing on: low to high, then back down.
    for (const height of [240, 720, 480, 240, 720]) {
      await page.evaluate((h) => window.vc.select(h), height);
      const at = await until(`${label} to decode ${height}p`, async () => {
        const s = await noErrors(`${label} switching to ${height}p`);
        return s.height === height && s;
      }, { timeout: 30000 });
      await playsPast(`${label} to play on at ${height}p`, at.t + 1.5);
      const s = await noErrors(label);
      assert.equal(s.height, height, `${label}: still ${height}p`);
      run.switched.push(height);
      if (s.t > 15) {
        await page.evaluate(() => window.vc.seek(1));
        await until(`${label} to seek back`, async () => (await state()).t < 4);
      }
    }
    await screenshot(`${player}-${kind}-switched`);
    // From the middle (not a segment start), then a seek forward.
    await page.goto(`${base}/__players/harness.html`);
    await page.evaluate(([p, url]) => window.vc.open(p, url, 9), [player, manifests[kind]]);
    run.first_time_from_9 = (await state()).t;
    assert.ok(run.first_time_from_9 >= 7.9, `${label} started at ${run.first_time_from_9}, not in the middle`);
    await playsPast(`${label} to play from 9 s`, 10.5);
    run.started_at_9 = true;
    await page.evaluate(() => window.vc.seek(15.3));
    await playsPast(`${label} to play on after a seek to 15.3 s`, 16.5);
    run.seeked = true;
    run.errors = (await state()).errors;
    summary.runs.push(run);
  }

  // ---- the player page: "Play both" at several moments after load ----
  for (const delay of [500, 1000, 2000, 3000, 4000]) {
    await page.goto(`${base}/player?hash=${hash}`);
    await sleep(delay);
    await page.locator('#play-both').click();
    const times = () => page.evaluate(() => ['hls', 'dash'].map((k) => {
      const v = document.getElementById(`${k}-video`);
      return { t: v.currentTime, readyState: v.readyState, paused: v.paused, error: v.error && v.error.code,
        shown: document.getElementById(`${k}-errors`).textContent };
    }));
    await until(`both videos past 5 s ("Play both" at ${delay} ms)`, async () => {
      const both = await times();
      for (const v of both) assert.ok(v.error === null && v.shown === '', JSON.stringify(both));
      return both.every((v) => v.t > 5);
    }, { timeout: 30000 }).catch(async (e) => { throw new Error(`${e.message}: ${JSON.stringify(await times())}`); });
    summary.play_both.push({ delay_ms: delay, times: (await times()).map((v) => v.t) });
  }
  await screenshot('player-page-play-both');
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
