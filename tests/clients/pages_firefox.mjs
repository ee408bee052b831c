// The pages in Firefox (Debian's firefox-esr, headless), driven over
// WebDriver BiDi by puppeteer-core: a 20 s video through the upload page's
// file input, then both players on the player page. Run by
// tests/api/pages.rs, which checks the summary printed as the last line.
//
//   node pages_firefox.mjs --binary B --root R --database URL --port P --small S.mp4 --artifacts DIR
import puppeteer from 'puppeteer-core';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Daemon, until } from './daemon.mjs';

const names = ['binary', 'root', 'database', 'port', 'small', 'artifacts'];
const { values: opt } = parseArgs({ options: Object.fromEntries(names.map((n) => [n, { type: 'string' }])) });
for (const name of names) assert.ok(opt[name], `--${name} is required`);
mkdirSync(opt.artifacts, { recursive: true });
const daemon = new Daemon(opt);
await daemon.start();
const browser = await puppeteer.launch({
  browser: 'firefox',
  executablePath: process.env.VIDCACHE_TEST_FIREFOX || '/usr/bin/firefox-esr',
  headless: true,
  // Muted video may play without a gesture; no update or telemetry traffic.
  extraPrefsFirefox: { 'media.autoplay.default': 0, 'app.update.enabled': false, 'datareporting.policy.dataSubmissionEnabled': false },
});
const summary = { screenshots: [] };
let shot = 0;
const page = await browser.newPage();
await page.setViewport({ width: 1400, height: 900 });
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(String(e)));
async function screenshot(name) {
  const path = `${opt.artifacts}/firefox-${String(++shot).padStart(2, '0')}-${name}.png`;
  await page.screenshot({ path, fullPage: true });
  summary.screenshots.push(path);
}

try {
  summary.user_agent = await browser.userAgent();
  await page.goto(`${daemon.base}/`);
  summary.secure_context = await page.evaluate(() => window.isSecureContext);
  const input = await page.$('#file-input');
  await input.uploadFile(opt.small);
  const state = () => page.evaluate(() => {
    const li = document.querySelector('#uploads li.upload');
    if (!li) return null;
    const bar = li.querySelector('progress');
    return { state: li.dataset.state, transcode: li.dataset.transcode, hash: li.dataset.hash,
      status: li.dataset.status, fraction: bar.value / bar.max, text: li.innerText };
  });
  await until('the upload to finish', async () => {
    const s = await state();
    assert.ok(!s || s.state !== 'error', s && s.text);
    return s && s.state === 'done';
  }, { timeout: 120000 });
  await until('the transcode link', async () => (await state()).transcode === 'ready', { timeout: 180000, every: 250 });
  summary.upload = await state();
  await screenshot('upload-transcoded');

  await page.goto(`${daemon.base}/player?hash=${summary.upload.hash}`);
  await page.waitForSelector('#stage:not([hidden])');
  await page.click('#play-both');
  const players = () => page.evaluate(() => ['hls', 'dash'].map((k) => {
    const v = document.getElementById(`${k}-video`);
    return { t: v.currentTime, error: v.error && v.error.code,
      shown: document.getElementById(`${k}-errors`).textContent,
      height: document.getElementById(`${k}-rendition`).dataset.height || '' };
  }));
  await until('both players past 2 s', async () => (await players()).every((p) => p.t > 2), { timeout: 60000 });
  summary.playing = await players();
  await screenshot('player-both-playing');
  // A manual rendition in each player.
  summary.switches = [];
  for (const kind of ['hls', 'dash']) {
    await page.select(`#${kind}-quality`, '240');
    await until(`${kind} to use 240p`, async () =>
      (await page.$eval(`#${kind}-rendition`, (n) => n.dataset.height)) === '240', { timeout: 30000 });
    summary.switches.push(kind);
  }
  summary.after_switch = await players();
  await screenshot('player-switched');
} catch (e) {
  await screenshot('failure').catch(() => {});
  summary.failure = String((e && e.stack) || e);
} finally {
  summary.page_errors = pageErrors;
  await browser.close();
  await daemon.kill();
}
console.log(JSON.stringify(summary));
