// tus-js-client under Node resumes an upload at UPLOAD_URL (on a daemon
// other than the one that began it) with its default retryDelays (0, 1,
// 3, 5 s), and counts the 423 Locked answers it met on the way, with their
// Retry-After.
// Usage: node tus_js_resume.mjs UPLOAD_URL FILE CHUNK_BYTES
import { readFileSync } from 'node:fs';
import * as tus from 'tus-js-client';

const [uploadUrl, path, chunkArg] = process.argv.slice(2);
const file = readFileSync(path);
const locked = [];
const started = Date.now();
await new Promise((resolve, reject) => {
  const upload = new tus.Upload(file, {
    uploadUrl,
    chunkSize: Number(chunkArg),
    // retryDelays: tus-js-client's default.
    onAfterResponse: (req, res) => {
      if (res.getStatus() === 423) locked.push(res.getHeader('Retry-After'));
    },
    onError: reject,
    onSuccess: resolve,
  });
  upload.start();
});
console.log(JSON.stringify({
  url: uploadUrl, locked: locked.length, retry_after: locked[0] ?? null, resumed_in_ms: Date.now() - started,
}));
