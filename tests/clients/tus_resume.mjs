// Resumes a tus upload at `uploadUrl` with tus-js-client's default
// retryDelays (0, 1, 3, 5 s), counting the 423 Locked answers met on the
// way (another daemon's claim still running) and their Retry-After.
import * as tus from 'tus-js-client';

export async function resume(uploadUrl, file, chunkSize) {
  const locked = [];
  const started = Date.now();
  await new Promise((resolve, reject) => {
    const upload = new tus.Upload(file, {
      uploadUrl,
      chunkSize,
      // retryDelays: tus-js-client's default.
      onAfterResponse: (req, res) => {
        if (res.getStatus() === 423) locked.push(res.getHeader('Retry-After'));
      },
      onError: reject,
      onSuccess: resolve,
    });
    upload.start();
  });
  return { locked: locked.length, retry_after: locked[0] ?? null, resumed_in_ms: Date.now() - started };
}
