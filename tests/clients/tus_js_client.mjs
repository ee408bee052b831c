// tus-js-client under Node against vidcache: upload until a few chunks are
// in, abort (as a closed tab would), then a new Upload resumes from the
// offset the server reports. Usage: node tus_js_client.mjs ENDPOINT FILE [CHUNK_BYTES]
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import * as tus from 'tus-js-client';

const [endpoint, path, chunkArg] = process.argv.slice(2);
const chunkSize = Number(chunkArg || 1 << 20);
const file = readFileSync(path);

function run(options, stopAfter) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(file, {
      ...options,
      chunkSize,
      retryDelays: [0, 500, 1000],
      metadata: { filename: basename(path), filetype: 'video/mp4' },
      onError: reject,
      onChunkComplete: (_size, sent) => {
        if (stopAfter && sent >= stopAfter) {
          upload.abort().then(() => resolve({ url: upload.url, sent }));
        }
      },
      onSuccess: () => resolve({ url: upload.url, sent: file.length }),
    });
    upload.start();
  });
}

const first = await run({ endpoint }, Math.min(3 * chunkSize, Math.floor(file.length / 2)));
const head = await fetch(first.url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
const resumedFrom = Number(head.headers.get('upload-offset'));
await run({ endpoint, uploadUrl: first.url });
console.log(JSON.stringify({ url: first.url, interrupted_at: first.sent, resumed_from: resumedFrom, size: file.length }));
