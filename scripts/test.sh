#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints with warnings denied, all tests,
# the real-NocoBase suite (tests/nocobase_real.rs) included.
#
# Needs a Rust toolchain with rustfmt and clippy (everything else is fetched by cargo) and,
# for the real NocoBase, root (apt-get installs PostgreSQL from Debian) plus the Debian and
# npm registries the first time: scripts/real-nocobase.sh installs NocoBase 2.2.15 (cached
# under /var/cache/nocobase-mail-operator-e2e) while the code builds, starts it on
# 127.0.0.1:13000, and whatever it started is stopped, by process id, when this script ends.
# If NocoBase cannot be installed or started, this script fails: it never passes without it.
set -euo pipefail
cd "$(dirname "$0")/.."

REAL=scripts/real-nocobase.sh
LOG=$(mktemp -t real-nocobase.XXXXXX.log)
t0=$SECONDS
# Its own session (setsid), so that an early exit can stop the whole install by group id.
setsid bash "$REAL" start >"$LOG" 2>&1 </dev/null &
start_pid=$!

finish() {
  local rc=$?
  if kill -0 "$start_pid" 2>/dev/null; then
    kill -TERM -- "-$start_pid" 2>/dev/null || true
    wait "$start_pid" 2>/dev/null || true
  fi
  bash "$REAL" stop-started || true
  rm -f "$LOG"
  exit "$rc"
}
trap finish EXIT

echo "== real NocoBase: starting in the background (log: $LOG)"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings denied)"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test: building"
cargo test --all-targets --locked --no-run

echo "== real NocoBase: waiting for it"
if ! wait "$start_pid"; then
  cat "$LOG" >&2
  echo "FAILED: the real NocoBase could not be installed or started (see above)" >&2
  exit 1
fi
cat "$LOG"
echo "== real NocoBase ready $((SECONDS - t0)) s after this script started"
# shellcheck disable=SC1090
source "$(bash "$REAL" env)"
export NOCOBASE_REAL_REQUIRED=1

echo "== cargo test"
t1=$SECONDS
cargo test --all-targets --locked
echo "== cargo test took $((SECONDS - t1)) s"
