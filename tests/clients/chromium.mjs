// Debian's Chromium, headless, for the page tests and the page benchmark.
// Playwright cannot download its own browsers here, so playwright-core is
// pointed at /usr/bin/chromium (or $VIDCACHE_TEST_CHROMIUM). Without the
// background-networking flags Chromium keeps trying to reach Google's hosts,
// which this machine's closed network refuses.
import { chromium } from 'playwright-core';

export function launchChromium(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.VIDCACHE_TEST_CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', ...extraArgs],
  });
}
