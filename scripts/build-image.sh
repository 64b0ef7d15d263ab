#!/usr/bin/env bash
# Builds the operator's container image without a registry, as an OCI archive:
#
#   bash scripts/build-image.sh [--binary PATH] [--tag TAG] OUT.tar
#
# The same layout as the Dockerfile's image (gcr.io/distroless/cc-debian12:nonroot with the
# binary at /nocobase-mail-operator; tests/image.rs compares the two): user 65532:65532,
# entrypoint /nocobase-mail-operator, command `run`, port 8080, the same labels; in the root
# file system only the binary, the C runtime it links (glibc, libgcc, from this machine's
# Debian), the CA roots, /etc/passwd and /etc/group naming the nonroot user, its home and a
# /tmp. No shell, no package manager. Made with umoci (Debian package `umoci`, installed
# when missing), from an empty image: nothing is pulled.
#
# --binary defaults to a release build (`cargo build --release`, made if missing). Prints
# the archive's size and the image's (uncompressed root file system) size.
set -euo pipefail
cd "$(dirname "$0")/.."

binary="" tag="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
while [[ $# -gt 1 ]]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
out="${1:?usage: build-image.sh [--binary PATH] [--tag TAG] OUT.tar}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"

if ! command -v umoci >/dev/null; then
  echo "== installing umoci (Debian package umoci)"
  apt-get update -qq -o DPkg::Lock::Timeout=600
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
    --no-install-recommends umoci >/dev/null
fi
if [[ -z "$binary" ]]; then
  cargo build --release --locked --bin nocobase-mail-operator
  binary=target/release/nocobase-mail-operator
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
layout="$work/layout" bundle="$work/bundle"
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$bundle"
root="$bundle/rootfs"

# the binary, stripped as the Dockerfile strips it
install -D -m 0755 "$binary" "$root/nocobase-mail-operator"
strip "$root/nocobase-mail-operator"
# the C runtime it links, at the paths the dynamic loader looks in (as distroless/cc has)
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
# the CA roots rustls-platform-verifier reads
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
# distroless's users: root and nonroot (65532), neither with a shell
install -d -m 0755 "$root/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
install -d -m 0700 -o 65532 -g 65532 "$root/home/nonroot"
install -d -m 1777 "$root/tmp"

umoci repack --image "$layout:$tag" "$bundle"
umoci config --image "$layout:$tag" \
  --config.user 65532:65532 \
  --config.entrypoint /nocobase-mail-operator \
  --config.cmd run \
  --config.exposedports 8080/tcp \
  --config.workingdir / \
  --config.label org.opencontainers.image.title=nocobase-mail-operator \
  --config.label "org.opencontainers.image.description=Kubernetes operator that validates the Microsoft Entra client secret of NocoBase's email manager, warns before it expires and injects only accepted credentials into NocoBase" \
  --config.label org.opencontainers.image.source=https://github.com/nocobase-mail-operator/nocobase-mail-operator \
  --config.label org.opencontainers.image.licenses=Apache-2.0 \
  --config.label "org.opencontainers.image.version=$version"
umoci gc --layout "$layout"

mkdir -p "$(dirname "$out")"
tar -C "$layout" -cf "$out" .
echo "image $tag: $(du -k "$out" | cut -f1) KiB archive, $(du -sk "$root" | cut -f1) KiB root file system -> $out"
