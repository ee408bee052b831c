#!/usr/bin/env bash
# Installs the system packages vidcache builds with, when missing, and with
# --test also what the tests and benchmarks run: the upload clients, the
# Kafka client, and Debian's Chromium and Firefox ESR, which the browser-page
# tests drive (Playwright and Puppeteer cannot download a browser here).
# Debian 12 names; FFmpeg 5.1 development libraries, clang for bindgen, and
# what rdkafka's vendored librdkafka build needs.
set -euo pipefail
PACKAGES=(pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
  libswresample-dev libavfilter-dev libavdevice-dev ffmpeg cmake libssl-dev libsasl2-dev zlib1g-dev
  libzstd-dev curl b3sum)
TESTING=0
[ "${1:-}" = "--test" ] && TESTING=1
# docker-compose: `docker-compose config` validates docker-compose.yaml with no engine.
((TESTING)) && PACKAGES+=(chromium firefox-esr docker-compose)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
((TESTING)) || exit 0

# The real upload clients the tests drive: tuspy (Python) and tus-js-client (Node).
python3 -c "import tusclient" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check tuspy==1.1.0
# The outside Kafka client of the tests and kafka/create-topics.py.
python3 -c "import confluent_kafka" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check confluent-kafka==2.12.1
# The published Python client, run against a daemon with keys (tests/api/access.rs).
python3 -c "import vidcache_client" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check dwilson-vidcache-client==1.3.0
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
# tus-js-client; shaka-player, the strict player the ladder is proven with;
# playwright-core, which drives /usr/bin/chromium in the page
# tests; puppeteer-core, which drives /usr/bin/firefox-esr over WebDriver BiDi.
if [ ! -d tests/clients/node_modules/tus-js-client ] || [ ! -d tests/clients/node_modules/playwright-core ] \
  || [ ! -d tests/clients/node_modules/puppeteer-core ] || [ ! -d tests/clients/node_modules/shaka-player ]; then
  (cd tests/clients && npm ci --no-audit --no-fund --silent)
fi
