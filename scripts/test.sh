#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints with warnings denied, all tests.
# Needs only a Rust toolchain with rustfmt and clippy; everything else is fetched by cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings denied)"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --all-targets --locked
