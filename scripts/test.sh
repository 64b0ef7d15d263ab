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
#
# The same holds for the real Kubernetes control plane: scripts/real-kube.sh fetches and
# builds (cached under /var/cache/nocobase-mail-operator-kube) etcd, kube-apiserver and
# kube-controller-manager 1.20 from Debian's packages while the code builds, starts them on
# loopback (free ports, an instance of this checkout's own), and the real-cluster suites
# (tests/kube_real.rs, tests/e2e.rs) run against it with KUBE_REAL_REQUIRED=1: a control
# plane that cannot be built or started fails the run, never skips it.
set -euo pipefail
cd "$(dirname "$0")/.."

# promtool (Debian package prometheus) for the alert-rule tests (tests/monitoring.rs) and
# umoci for the image tests (tests/image.rs, scripts/build-image.sh)
if ! command -v promtool >/dev/null || ! command -v umoci >/dev/null; then
  echo "== installing promtool and umoci (Debian packages prometheus, umoci)"
  apt-get update -qq -o DPkg::Lock::Timeout=600
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
    --no-install-recommends prometheus umoci >/dev/null
fi

REAL=scripts/real-nocobase.sh
KUBE=scripts/real-kube.sh
LOG=$(mktemp -t real-nocobase.XXXXXX.log)
KLOG=$(mktemp -t real-kube.XXXXXX.log)
t0=$SECONDS
# Each in its own session (setsid), so that an early exit can stop it by group id.
setsid bash "$REAL" start >"$LOG" 2>&1 </dev/null &
start_pid=$!
setsid bash "$KUBE" start >"$KLOG" 2>&1 </dev/null &
kube_pid=$!
# mdBook for the documentation book (tests/book.rs), built from crates.io into target/tools
BLOG=$(mktemp -t mdbook.XXXXXX.log)
MDBOOK_VERSION=0.5.4
export MDBOOK="$PWD/target/tools/bin/mdbook"
if [[ "$("$MDBOOK" --version 2>/dev/null)" != "mdbook v$MDBOOK_VERSION" ]]; then
  setsid cargo install mdbook --version "$MDBOOK_VERSION" --locked --no-default-features \
    --root "$PWD/target/tools" >"$BLOG" 2>&1 </dev/null &
  book_pid=$!
else
  book_pid=""
fi

stop_start() { # pid: a start still running is stopped with its whole group
  if kill -0 "$1" 2>/dev/null; then
    kill -TERM -- "-$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}

finish() {
  local rc=$?
  stop_start "$start_pid"
  stop_start "$kube_pid"
  [[ -n "$book_pid" ]] && stop_start "$book_pid"
  bash "$REAL" stop-started || true
  bash "$KUBE" stop-started || true
  rm -f "$LOG" "$KLOG" "$BLOG"
  exit "$rc"
}
trap finish EXIT

echo "== real NocoBase: starting in the background (log: $LOG)"
echo "== real Kubernetes control plane: starting in the background (log: $KLOG)"

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

echo "== real Kubernetes control plane: waiting for it"
if ! wait "$kube_pid"; then
  cat "$KLOG" >&2
  echo "FAILED: the real Kubernetes control plane could not be built or started (see above)" >&2
  exit 1
fi
cat "$KLOG"
echo "== real Kubernetes control plane ready $((SECONDS - t0)) s after this script started"
# shellcheck disable=SC1090
source "$(bash "$KUBE" env)"
export KUBE_REAL_REQUIRED=1 NOCOBASE_MAIL_E2E=1

echo "== mdBook: waiting for it"
if [[ -n "$book_pid" ]] && ! wait "$book_pid"; then
  cat "$BLOG" >&2
  echo "FAILED: mdBook could not be installed (see above)" >&2
  exit 1
fi
export BOOK_REQUIRED=1

echo "== cargo test"
t1=$SECONDS
cargo test --all-targets --locked
echo "== cargo test took $((SECONDS - t1)) s"
