#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for the real-cluster tests: etcd 3.4 and
# kubectl 1.20 from Debian's packages, kube-apiserver and kube-controller-manager 1.20
# built from Debian 12's source package `kubernetes` with Go 1.15. No kubelet and no
# scheduler: every object is real (watches, server-side apply, managedFields, finalizers,
# garbage collection, RBAC, namespace deletion, ServiceAccount tokens), pods never run.
#
# Usage (as root the first time: apt-get installs rsync and jq, the build's dependencies;
# it needs the Debian registry the first time):
#
#   bash scripts/real-kube.sh start    # fetch and build what is missing (cached), start
#   source "$(bash scripts/real-kube.sh env)"   # KUBECONFIG, KUBE_REAL_* (below)
#   bash scripts/real-kube.sh stop     # stop this instance's servers, by process id
#   bash scripts/real-kube.sh stop-started     # only what the last `start` started
#   bash scripts/real-kube.sh build    # only fetch and build the binaries (cached)
#   bash scripts/real-kube.sh status   # exit 0 when the instance's API server answers
#
# One instance per checkout. Several worktrees may run their suites at the same time, and
# the integration CRD, the chart's ClusterRole and the audit log are cluster-wide, so a
# shared server would let one checkout's CRD or RBAC change under another's tests. Each
# checkout (instance name: the checkout directory's name, or $KUBE_REAL_INSTANCE) gets its
# own etcd, API server and controller manager, with ports chosen free at start and its
# runtime files in $KUBE_REAL_HOME/run/<instance>. Within one instance `start` is
# idempotent: when the instance's API server already answers it only prints the env
# file's path (and starts nothing, so `stop-started` then stops nothing); a lock keeps two
# concurrent starts of the same instance from starting twice. A fresh start begins with an
# empty etcd and an empty audit log. The build is shared by every instance (its own lock).
#
# The env file (`env` prints its path) exports:
#   KUBECONFIG, KUBE_REAL_KUBECONFIG  an admin kubeconfig (token user in system:masters)
#   KUBE_REAL_SERVER          https://127.0.0.1:<port>
#   KUBE_REAL_CA              the CA that signed the serving certificate (PEM file)
#   KUBE_REAL_AUDIT_LOG       the API server's audit log (JSON lines, level Metadata:
#                             every request with its user, verb, object and response code)
#   KUBE_REAL_KUBECTL         kubectl 1.20 from Debian's kubernetes-client
#   KUBE_REAL_VERSION         the server's version (1.20.2)
#   KUBE_REAL_SCRIPT          this script's absolute path
#
# Cache, kept between runs on the same machine ($KUBE_REAL_HOME, default
# /var/cache/nocobase-mail-operator-kube): a private apt configuration and its downloads
# (nothing is installed system-wide but rsync and jq), Go 1.15 unpacked from bullseye's
# packages, the kubernetes source package and the built binaries (about 210 MB). Cold, the
# first start downloads about 120 MB and builds for about 8 minutes of one core's time
# (niced: the machine is shared); warm, it only starts the three servers (a few seconds).
#
# Anything that cannot be fetched, built or started makes the script exit non-zero with
# the step and the log's tail: it never reports success without an API server that answers.
set -euo pipefail

KUBE_SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
KUBE_VERSION=1.20.2
GO_VERSION=1.15
HOME_DIR=${KUBE_REAL_HOME:-/var/cache/nocobase-mail-operator-kube}
SCRIPT_PATH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
CHECKOUT=$(cd "$(dirname "$SCRIPT_PATH")/.." && pwd)
INSTANCE=${KUBE_REAL_INSTANCE:-$(basename "$CHECKOUT" | tr -c 'A-Za-z0-9_.\n-' _)}
APT_DIR=$HOME_DIR/apt
DEBS=$HOME_DIR/debs
ROOTS=$HOME_DIR/roots
SRC_DIR=$HOME_DIR/src
BIN=$HOME_DIR/bin/$KUBE_SRC_VERSION
PKI=$HOME_DIR/pki
RUN=$HOME_DIR/run/$INSTANCE
ENV_FILE=$RUN/env.sh
STARTED=$RUN/started
GO_ROOT=$ROOTS/golang-$GO_VERSION/usr/lib/go-$GO_VERSION

log() { echo "[real-kube $INSTANCE $(date -u +%H:%M:%S)] $*" >&2; }
die() {
  log "FAILED: $*"
  exit 1
}
tail_of() { [ -f "$1" ] && tail -n 40 "$1" >&2 || true; }
pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
read_pid() { cat "$1" 2>/dev/null || true; }

# ---------------------------------------------------------------- fetching (private apt)

# The mirror and keyring of the system's bookworm entry, so that the private configuration
# reaches the same registry the machine is configured for.
system_mirror() {
  local uri
  uri=$(awk '
    /^[[:space:]]*$/ { if (deb && suites ~ /(^| )bookworm( |$)/ && uri != "") { print uri; exit } deb=0; suites=""; uri="" }
    /^Types:/ { deb = ($0 ~ /(^|[ :])deb( |$)/) }
    /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites=$0 }
    /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); split($0, a, " "); uri=a[1] }
    END { if (deb && suites ~ /(^| )bookworm( |$)/ && uri != "") print uri }
  ' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
  if [ -z "$uri" ]; then
    uri=$(awk '$1 == "deb" && $0 ~ / bookworm / { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1)
  fi
  echo "${KUBE_REAL_DEBIAN_MIRROR:-$uri}"
}

APT_OPTS=()
private_apt() {
  local mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  mirror=$(system_mirror)
  [ -n "$mirror" ] || die "no bookworm entry in /etc/apt/sources.list*: set KUBE_REAL_DEBIAN_MIRROR"
  mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/etc/preferences.d"
  cat >"$APT_DIR/etc/sources.list.new" <<EOF
deb [signed-by=$keyring] $mirror bookworm main
deb-src [signed-by=$keyring] $mirror bookworm main
deb [signed-by=$keyring] $mirror bullseye main
EOF
  mv "$APT_DIR/etc/sources.list.new" "$APT_DIR/etc/sources.list"
  APT_OPTS=(-o "Dir::Etc::SourceList=$APT_DIR/etc/sources.list" -o "Dir::Etc::SourceParts=$APT_DIR/etc/none"
    -o "Dir::Etc::Preferences=$APT_DIR/etc/none" -o "Dir::Etc::PreferencesParts=$APT_DIR/etc/preferences.d"
    -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache" -o "APT::Sandbox::User=root")
  if [ ! -f "$APT_DIR/updated" ]; then
    log "apt-get update (private configuration: bookworm deb and deb-src, bullseye deb)"
    apt-get "${APT_OPTS[@]}" update -q >"$HOME_DIR/apt.log" 2>&1 || { tail_of "$HOME_DIR/apt.log"; die "apt-get update"; }
    touch "$APT_DIR/updated"
  fi
}

# Unpacks package $2 (name/suite) into root $1 with dpkg -x; absolute symlinks inside the
# packages (Go's /usr/lib/go-1.15/src -> /usr/share/go-1.15/src) are re-pointed into the root.
unpack() {
  local root=$1 pkg=$2 deb
  mkdir -p "$DEBS" "$root"
  (cd "$DEBS" && apt-get "${APT_OPTS[@]}" download -q "$pkg") >>"$HOME_DIR/apt.log" 2>&1 ||
    { tail_of "$HOME_DIR/apt.log"; die "apt-get download $pkg"; }
  deb=$(ls -t "$DEBS/${pkg%%/*}"_*.deb | head -n 1)
  dpkg -x "$deb" "$root"
  find "$root" -type l | while read -r link; do
    target=$(readlink "$link")
    case "$target" in /*) ln -sfn "$root$target" "$link" ;; esac
  done
}

install_build_deps() {
  local missing=()
  command -v rsync >/dev/null || missing+=(rsync)
  command -v jq >/dev/null || missing+=(jq)
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]} (the kubernetes build's dependencies)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >>"$HOME_DIR/apt.log" 2>&1 ||
    { tail_of "$HOME_DIR/apt.log"; die "apt-get install ${missing[*]}"; }
}

fetch_tools() {
  if [ ! -f "$ROOTS/golang-$GO_VERSION/.done" ]; then
    log "fetching Go $GO_VERSION (bullseye's golang-$GO_VERSION-go and -src, unpacked, not installed)"
    rm -rf "$ROOTS/golang-$GO_VERSION"
    unpack "$ROOTS/golang-$GO_VERSION" "golang-$GO_VERSION-src/bullseye"
    unpack "$ROOTS/golang-$GO_VERSION" "golang-$GO_VERSION-go/bullseye"
    "$GO_ROOT/bin/go" version >/dev/null || die "the unpacked Go $GO_VERSION does not run"
    touch "$ROOTS/golang-$GO_VERSION/.done"
  fi
  if [ ! -f "$ROOTS/client/.done" ]; then
    log "fetching etcd-server and kubernetes-client (bookworm, unpacked, not installed)"
    rm -rf "$ROOTS/client"
    unpack "$ROOTS/client" etcd-server/bookworm
    unpack "$ROOTS/client" kubernetes-client/bookworm
    touch "$ROOTS/client/.done"
  fi
}

fetch_source() {
  [ -f "$SRC_DIR/.done-$KUBE_SRC_VERSION" ] && return
  log "fetching the kubernetes $KUBE_SRC_VERSION source package"
  rm -rf "$SRC_DIR"
  mkdir -p "$SRC_DIR/dl"
  (cd "$SRC_DIR/dl" && apt-get "${APT_OPTS[@]}" source -q --download-only "kubernetes=$KUBE_SRC_VERSION") \
    >>"$HOME_DIR/apt.log" 2>&1 || { tail_of "$HOME_DIR/apt.log"; die "apt-get source kubernetes"; }
  (cd "$SRC_DIR" && dpkg-source -x --no-check dl/kubernetes_*.dsc tree) >"$HOME_DIR/dpkg-source.log" 2>&1 ||
    { tail_of "$HOME_DIR/dpkg-source.log"; die "dpkg-source -x kubernetes"; }
  touch "$SRC_DIR/.done-$KUBE_SRC_VERSION"
}

# As Debian's rules do: a GOPATH whose src/k8s.io/kubernetes is the tree, no cgo.
build_binaries() {
  [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && return
  local gopath=$HOME_DIR/gopath tree=$SRC_DIR/tree t0=$SECONDS
  mkdir -p "$gopath/src/k8s.io"
  ln -sfn "$tree" "$gopath/src/k8s.io/kubernetes"
  # An earlier failed make (say, without rsync) leaves an empty generator binary behind.
  rm -rf "$tree/_output"
  log "building kube-apiserver and kube-controller-manager with Go $GO_VERSION (about 8 minutes of one core; log $HOME_DIR/build.log)"
  (cd "$gopath/src/k8s.io/kubernetes" &&
    env GOPATH="$gopath" GOROOT="$GO_ROOT" PATH="$GO_ROOT/bin:$PATH" GOCACHE="$HOME_DIR/gocache" \
      CGO_ENABLED=0 GO111MODULE=off GOFLAGS= KUBE_GIT_VERSION="v$KUBE_VERSION" \
      nice -n 10 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager") >"$HOME_DIR/build.log" 2>&1 ||
    { tail_of "$HOME_DIR/build.log"; die "make kube-apiserver kube-controller-manager"; }
  mkdir -p "$BIN.tmp"
  for b in kube-apiserver kube-controller-manager; do
    [ -s "$tree/_output/bin/$b" ] || die "the build made no $b"
    cp "$tree/_output/bin/$b" "$BIN.tmp/$b"
  done
  rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
  rm -rf "$tree/_output"
  log "built in $((SECONDS - t0)) s"
}

cmd_build() {
  mkdir -p "$HOME_DIR"
  exec 8>"$HOME_DIR/build.lock"
  flock 8
  if [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kube-controller-manager" ] || [ ! -f "$ROOTS/client/.done" ]; then
    private_apt
    fetch_tools
    if [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kube-controller-manager" ]; then
      install_build_deps
      fetch_source
      build_binaries
    fi
  fi
  exec 8>&-
}

ETCD=$ROOTS/client/usr/bin/etcd
KUBECTL=$ROOTS/client/usr/bin/kubectl

# ---------------------------------------------------------------- certificates and users

# A CA and a serving certificate signed by it: rustls refuses a self-signed leaf marked
# CA:TRUE (what a one-step `openssl req -x509` makes). Kept in the cache, shared by instances.
make_pki() {
  [ -f "$PKI/.done" ] && return
  log "generating the CA, the serving certificate and the ServiceAccount keys"
  rm -rf "$PKI" && mkdir -p "$PKI" && chmod 700 "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=nocobase-mail-operator test CA"
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=kube-apiserver"
    cat >server.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
EOF
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
  ) >"$HOME_DIR/pki.log" 2>&1 || { tail_of "$HOME_DIR/pki.log"; die "openssl"; }
  touch "$PKI/.done"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_kubeconfig() { # file user token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: real-kube
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: real-kube
  context:
    cluster: real-kube
    user: $2
current-context: real-kube
EOF
}

# Users of the token file: the admin (tests, kubectl, helm) and the controller manager,
# both in system:masters. The operator under test never uses these: it runs as the
# chart's ServiceAccount, with the token the token controller creates.
make_users() {
  local admin cm
  admin=$(openssl rand -hex 24)
  cm=$(openssl rand -hex 24)
  umask 077
  cat >"$RUN/tokens.csv" <<EOF
$admin,real-kube-admin,uid-admin,"system:masters"
$cm,system:kube-controller-manager,uid-kcm,"system:masters"
EOF
  write_kubeconfig "$RUN/admin.kubeconfig" real-kube-admin "$admin"
  write_kubeconfig "$RUN/controller-manager.kubeconfig" system:kube-controller-manager "$cm"
  cat >"$RUN/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
EOF
}

# ---------------------------------------------------------------- servers

# fd 9 holds the start lock: servers must not inherit it, or it would never be released.
spawn() { # name command...
  local name=$1
  shift
  setsid "$@" >>"$RUN/$name.log" 2>&1 </dev/null 9>&- 8>&- &
  echo $! >"$RUN/$name.pid"
  echo "$name" >>"$STARTED"
}

start_etcd() {
  local peer
  peer=$(free_port)
  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  rm -rf "$RUN/etcd"
  spawn etcd "$ETCD" --name real-kube --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "real-kube=http://127.0.0.1:$peer" --unsafe-no-fsync
  wait_for etcd 60 curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  log "starting kube-apiserver on 127.0.0.1:$API_PORT"
  : >"$RUN/audit.log"
  spawn kube-apiserver "$BIN/kube-apiserver" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
    --secure-port "$API_PORT" --insecure-port 0 --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --tls-cert-file "$PKI/server.crt" --tls-private-key-file "$PKI/server.key" \
    --authorization-mode RBAC --token-auth-file "$RUN/tokens.csv" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/24 --endpoint-reconciler-type none \
    --audit-policy-file "$RUN/audit-policy.yaml" --audit-log-path "$RUN/audit.log" --audit-log-maxbackup 1 \
    --audit-log-maxsize 1024
  wait_for kube-apiserver 120 curl -sf --max-time 2 --cacert "$PKI/ca.crt" \
    -H "Authorization: Bearer $(sed -n 's/^    token: //p' "$RUN/admin.kubeconfig")" \
    "https://127.0.0.1:$API_PORT/readyz"
}

start_controller_manager() {
  log "starting kube-controller-manager"
  spawn kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$RUN/controller-manager.kubeconfig" \
    --controllers garbagecollector,deployment,replicaset,serviceaccount,serviceaccount-token,namespace \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --leader-elect=false --secure-port 0 --port 0
  # Ready when the token controller has made the default ServiceAccount's token Secret.
  wait_for kube-controller-manager 120 sh -c \
    "'$KUBECTL' --kubeconfig '$RUN/admin.kubeconfig' get secrets -n default -o name 2>/dev/null | grep -q default-token"
}

wait_for() { # name seconds command...
  local name=$1 deadline=$((SECONDS + $2)) pid
  shift 2
  pid=$(read_pid "$RUN/$name.pid")
  until "$@" >/dev/null 2>&1; do
    pid_alive "$pid" || { tail_of "$RUN/$name.log"; die "$name exited while starting"; }
    [ $SECONDS -lt $deadline ] || { tail_of "$RUN/$name.log"; die "$name not ready in time"; }
    sleep 0.3
  done
}

stop_one() {
  local name=$1 pid
  pid=$(read_pid "$RUN/$name.pid")
  if pid_alive "$pid"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do pid_alive "$pid" || break; sleep 0.1; done
    pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"
}

write_env() {
  umask 077
  cat >"$ENV_FILE.tmp" <<EOF
export KUBECONFIG=$RUN/admin.kubeconfig
export KUBE_REAL_KUBECONFIG=$RUN/admin.kubeconfig
export KUBE_REAL_SERVER=https://127.0.0.1:$API_PORT
export KUBE_REAL_CA=$PKI/ca.crt
export KUBE_REAL_AUDIT_LOG=$RUN/audit.log
export KUBE_REAL_KUBECTL=$KUBECTL
export KUBE_REAL_VERSION=$KUBE_VERSION
export KUBE_REAL_SCRIPT=$SCRIPT_PATH
EOF
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# 0 when the instance's API server answers with the env file's admin.
answers() {
  [ -f "$ENV_FILE" ] && [ -f "$RUN/admin.kubeconfig" ] && [ -x "$KUBECTL" ] &&
    pid_alive "$(read_pid "$RUN/kube-apiserver.pid")" &&
    "$KUBECTL" --kubeconfig "$RUN/admin.kubeconfig" --request-timeout 5s get --raw /readyz >/dev/null 2>&1
}

cmd_start() {
  mkdir -p "$RUN"
  exec 9>"$RUN/lock"
  flock 9
  if answers; then
    : >"$STARTED"
    log "reusing the running control plane ($(sed -n 's/^export KUBE_REAL_SERVER=//p' "$ENV_FILE"))"
    echo "$ENV_FILE"
    return
  fi
  local t0=$SECONDS
  cmd_stop_all 2>/dev/null || true
  : >"$STARTED"
  command -v curl >/dev/null || die "curl is not installed"
  cmd_build
  make_pki
  ETCD_PORT=$(free_port)
  API_PORT=$(free_port)
  make_users
  start_etcd
  start_apiserver
  start_controller_manager
  write_env
  log "ready in $((SECONDS - t0)) s on https://127.0.0.1:$API_PORT"
  echo "$ENV_FILE"
}

cmd_stop_all() {
  stop_one kube-controller-manager
  stop_one kube-apiserver
  stop_one etcd
}

cmd_stop() {
  mkdir -p "$RUN"
  cmd_stop_all
  rm -f "$ENV_FILE"
}

# Stops only what the last `start` started (nothing when it reused a running instance).
cmd_stop_started() {
  mkdir -p "$RUN"
  if [ -s "$STARTED" ]; then
    for name in kube-controller-manager kube-apiserver etcd; do
      grep -qx "$name" "$STARTED" && stop_one "$name"
    done
    rm -f "$ENV_FILE"
  fi
  rm -f "$STARTED"
}

case "${1:-}" in
start) cmd_start ;;
build) cmd_build ;;
stop) cmd_stop ;;
stop-started) cmd_stop_started ;;
env) echo "$ENV_FILE" ;;
status) answers ;;
*)
  echo "usage: $0 start|stop|stop-started|env|status|build" >&2
  exit 2
  ;;
esac
