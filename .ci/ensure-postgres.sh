#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432 for the test suite, as the
# `postgres` role without a password. Uses a running server as it is; only a
# server this script installs or starts itself gets loopback trust auth.
set -euo pipefail
ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if command -v pg_isready >/dev/null && ready; then exit 0; fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
if ! command -v pg_ctlcluster >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
hba=/etc/postgresql/$version/main/pg_hba.conf
if ! $SUDO grep -q "vidcache-test" "$hba"; then
  $SUDO sed -i '1i host all all 127.0.0.1/32 trust # vidcache-test\nhost all all ::1/128 trust # vidcache-test' "$hba"
fi
$SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
  || $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
for _ in $(seq 1 50); do ready && exit 0; sleep 0.2; done
echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
exit 1
