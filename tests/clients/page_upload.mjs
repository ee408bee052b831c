// One upload through the upload page in headless Chromium, timed from the
// file being chosen to the page showing the result. Used by
// tests/bench/pages_bench.py.
//
//   node page_upload.mjs --origin http://127.0.0.1:PORT --file F [--sha256-only]
//
// Prints {"seconds", "status", "hash", "checksum"} as JSON. With an origin
// that is not localhost (the bench maps vidcache.test to 127.0.0.1), the page
// is not a secure context and sends its chunks without a SHA-256.
// --sha256-only instead times WebCrypto SHA-256 over the file's chunks in
// the page (no upload), for the cost of the checksum alone.
import { launchChromium } from './chromium.mjs';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: { origin: { type: 'string' }, file: { type: 'string' }, 'sha256-only': { type: 'boolean' } },
});
const browser = await launchChromium(['--host-resolver-rules=MAP vidcache.test 127.0.0.1']);
try {
  const page = await browser.newPage();
  await page.goto(`${opt.origin}/`);
  let out;
  if (opt['sha256-only']) {
    // An input of its own, so that the page does not upload the file.
    await page.evaluate(() => {
      const input = document.createElement('input');
      input.type = 'file';
      input.id = 'bench-input';
      document.body.append(input);
    });
    await page.setInputFiles('#bench-input', opt.file);
    out = await page.evaluate(async () => {
      const file = document.getElementById('bench-input').files[0];
      const chunk = 8 << 20;
      const t = performance.now();
      for (let at = 0; at < file.size; at += chunk) {
        const bytes = await file.slice(at, at + chunk).arrayBuffer();
        await crypto.subtle.digest('SHA-256', bytes);
      }
      return { seconds: (performance.now() - t) / 1000, bytes: file.size };
    });
  } else {
    const t = Date.now();
    await page.setInputFiles('#file-input', opt.file);
    const item = page.locator('#uploads li.upload').first();
    await page.waitForFunction(() => {
      const li = document.querySelector('#uploads li.upload');
      return li && (li.dataset.state === 'done' || li.dataset.state === 'error');
    }, null, { timeout: 1800000, polling: 50 });
    const seconds = (Date.now() - t) / 1000;
    const state = await item.getAttribute('data-state');
    if (state !== 'done') throw new Error(`the upload failed: ${await item.innerText()}`);
    out = {
      seconds,
      status: await item.getAttribute('data-status'),
      hash: await item.getAttribute('data-hash'),
      checksum: await page.evaluate(() => window.isSecureContext),
    };
  }
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
