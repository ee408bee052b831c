// Loaded into a bare page by players.mjs, with Shaka Player, hls.js and
// dash.js: one <video>, one player at a time, ABR off, every error kept.
// window.vc.open(kind, url, start) loads and plays; vc.heights() lists the
// video renditions; vc.select(height) switches to one at once; vc.state()
// reports what the <video> is doing.
(() => {
  const video = document.getElementById('v');
  const errors = [];
  let player = null;
  video.addEventListener('error', () => errors.push(`video element error ${video.error && video.error.code}`));
  const uniq = (xs) => [...new Set(xs)].sort((a, b) => a - b);

  async function openShaka(url, start) {
    shaka.polyfill.installAll();
    const p = new shaka.Player();
    await p.attach(video);
    p.configure({ abr: { enabled: false } });
    p.addEventListener('error', (e) => errors.push(`shaka ${e.detail.code} ${JSON.stringify(e.detail.data).slice(0, 300)}`));
    await p.load(url, start);
    return {
      heights: () => uniq(p.getVariantTracks().map((t) => t.height)),
      select: (h) => p.selectVariantTrack(p.getVariantTracks().find((t) => t.height === h), true),
      active: () => (p.getVariantTracks().find((t) => t.active) || {}).height,
    };
  }

  async function openHls(url, start) {
    const hls = new Hls({ startPosition: start, enableWorker: true });
    hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) errors.push(`hls.js ${d.type} ${d.details}`); });
    await new Promise((resolve) => {
      hls.on(Hls.Events.MANIFEST_PARSED, resolve);
      hls.loadSource(url);
      hls.attachMedia(video);
    });
    hls.currentLevel = hls.levels.length - 1; // fixed: ABR off, lowest first in hls.js's order
    return {
      heights: () => uniq(hls.levels.map((l) => l.height)),
      select: (h) => { hls.currentLevel = hls.levels.findIndex((l) => l.height === h); },
      active: () => (hls.levels[hls.currentLevel] || {}).height,
    };
  }

  async function openDash(url, start) {
    const p = dashjs.MediaPlayer().create();
    const events = dashjs.MediaPlayer.events;
    p.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: false } } } });
    p.on(events.ERROR, (e) => errors.push(`dash.js ${JSON.stringify(e.error || e).slice(0, 300)}`));
    p.on(events.PLAYBACK_ERROR, (e) => errors.push(`dash.js playback ${JSON.stringify(e.error || e).slice(0, 300)}`));
    await new Promise((resolve) => {
      p.on(events.STREAM_INITIALIZED, resolve);
      p.initialize(video, url, false, start);
    });
    const reps = () => p.getRepresentationsByType('video');
    return {
      heights: () => uniq(reps().map((r) => r.height)),
      select: (h) => p.setRepresentationForTypeById('video', reps().find((r) => r.height === h).id, true),
      active: () => (p.getCurrentRepresentationForType('video') || {}).height,
    };
  }

  window.vc = {
    async open(kind, url, start) {
      const open = { shaka: openShaka, hls: openHls, dash: openDash }[kind];
      player = await open(url, start || 0);
      await video.play();
    },
    heights: () => player.heights(),
    select: (h) => player.select(h),
    seek: (t) => { video.currentTime = t; },
    state: () => ({
      t: video.currentTime, height: video.videoHeight, active: player && player.active(),
      paused: video.paused, readyState: video.readyState, errors: errors.slice(),
    }),
  };
})();
