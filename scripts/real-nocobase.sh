#!/usr/bin/env bash
# A real NocoBase 2.2.15 with PostgreSQL on loopback, for the real-NocoBase test suite
# (tests/nocobase_real.rs) and any other test that wants the real thing.
#
# Usage (as root: it installs Debian packages with apt-get; it needs the Debian and npm
# registries the first time):
#
#   bash scripts/real-nocobase.sh start   # install what is missing, start, create an API key
#   source "$(bash scripts/real-nocobase.sh env)"   # NOCOBASE_E2E_URL, NOCOBASE_E2E_API_KEY, ...
#   bash scripts/real-nocobase.sh stop    # stop PostgreSQL and NocoBase, by process id
#   bash scripts/real-nocobase.sh stop-started   # only what the last `start` started
#
#   app-stop / app-start   stop (SIGKILL, by pid) / start only NocoBase, PostgreSQL stays up:
#                          the suite's "NocoBase restarts while the operator runs" test
#   status                 exit 0 when NocoBase answers with the API key of the env file
#   reset                  stop, then forget the database (the next start reinstalls it)
#
# `start` is idempotent: when NocoBase already answers with the key in the env file it only
# prints that file's path (and starts nothing, so `stop-started` then stops nothing), so
# several suites share one instance; a lock keeps two concurrent starts from installing
# twice. `scripts/test.sh` runs `start` in the background while it builds, then the whole
# `cargo test` with the env file sourced and NOCOBASE_REAL_REQUIRED=1, then `stop-started`
# (trap): the real-NocoBase suite (tests/nocobase_real.rs) is part of the test command.
#
# Reusing it from another suite (say, tests of the email manager's settings that create a
# stand-in collection through `POST /api/collections:create`): in Rust, read
# NOCOBASE_E2E_URL and NOCOBASE_E2E_API_KEY and skip with a message when unset unless
# NOCOBASE_REAL_REQUIRED=1 (as tests/nocobase_real.rs does); in the shell,
#   bash scripts/real-nocobase.sh start && source "$(bash scripts/real-nocobase.sh env)"
# Collections, records and variables live in the cached database: name them per run
# (e.g. with the process id) and remove them at the end. `app:refresh` (also sent by the
# operator after each write) makes every request answer 503 APP_COMMANDING for 1 to 20 s,
# and tests/nocobase_real.rs kills and restarts NocoBase (app-stop/app-start): do not run
# another suite against the same instance at the same time.
# The env file (`env` prints its path) exports:
#   NOCOBASE_E2E_URL        http://127.0.0.1:$NOCOBASE_E2E_PORT (default port 13000)
#   NOCOBASE_E2E_API_KEY    an API key of role root, expiring never
#   NOCOBASE_E2E_SCRIPT     this script's absolute path (for app-stop/app-start from tests)
#   NOCOBASE_E2E_ADMIN_*    the admin account (for a sign-in of your own, e.g. the UI)
# A test suite that creates things in NocoBase (variables, collections through
# `collections:create`, ...) must use names of its own and delete them at the end: the
# database is kept between runs.
#
# Cache, kept between runs on the same machine ($NOCOBASE_E2E_HOME, default
# /var/cache/nocobase-mail-operator-e2e): the yarn tool, yarn's package cache, the installed
# application (node_modules, ~1.2 GB with PostgreSQL) and the PostgreSQL data directory.
# Cold, the first start downloads and installs everything (minutes); warm, it only starts
# the two servers. Runtime files (pids, logs, the env file) are under $NOCOBASE_E2E_HOME/run.
#
# Anything that cannot be installed or started makes the script exit non-zero with the
# step and the log's tail: it never reports success without a NocoBase that answers.
set -euo pipefail

NOCOBASE_VERSION=2.2.15
YARN_VERSION=1.22.22
HOME_DIR=${NOCOBASE_E2E_HOME:-/var/cache/nocobase-mail-operator-e2e}
PORT=${NOCOBASE_E2E_PORT:-13000}
PG_PORT=${NOCOBASE_E2E_PG_PORT:-54329}
APP_DIR=$HOME_DIR/app
PG_DATA=$HOME_DIR/pgdata
RUN=$HOME_DIR/run
ENV_FILE=$RUN/env.sh
STARTED=$RUN/started
URL=http://127.0.0.1:$PORT
ADMIN_EMAIL=admin@nocobase.com
ADMIN_PASSWORD=admin123
DB_NAME=nocobase
DB_USER=nocobase
DB_PASSWORD=nocobase-e2e
SCRIPT_PATH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")

log() { echo "[real-nocobase $(date -u +%H:%M:%S)] $*" >&2; }
die() {
  log "FAILED: $*"
  exit 1
}
# The tail of a log, for a failure message.
tail_of() { [ -f "$1" ] && tail -n 40 "$1" >&2 || true; }

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
read_pid() { cat "$1" 2>/dev/null || true; }

# ---------------------------------------------------------------- PostgreSQL

pg_bin() {
  local initdb
  initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$initdb" ] && dirname "$initdb"
}

install_postgres() {
  if [ -n "$(pg_bin)" ]; then return; fi
  log "installing PostgreSQL from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >"$RUN/apt.log" 2>&1 || { tail_of "$RUN/apt.log"; die "apt-get update"; }
  apt-get install -y -q --no-install-recommends postgresql >>"$RUN/apt.log" 2>&1 ||
    { tail_of "$RUN/apt.log"; die "apt-get install postgresql"; }
  [ -n "$(pg_bin)" ] || die "PostgreSQL installed but no initdb under /usr/lib/postgresql"
}

# fd 9 holds the start lock: servers must not inherit it, or it would never be released.
as_postgres() { runuser -u postgres -- "$@" 9>&-; }

start_postgres() {
  local bin
  bin=$(pg_bin)
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    log "creating a PostgreSQL cluster in $PG_DATA"
    rm -rf "$PG_DATA" "$HOME_DIR/db-installed"
    mkdir -p "$PG_DATA"
    chown postgres:postgres "$PG_DATA"
    as_postgres "$bin/initdb" -D "$PG_DATA" -A trust -U postgres >"$RUN/initdb.log" 2>&1 ||
      { tail_of "$RUN/initdb.log"; die "initdb"; }
  fi
  if as_postgres "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    log "PostgreSQL already running"
  else
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    touch "$RUN/postgres.log" && chown postgres "$RUN/postgres.log"
    as_postgres "$bin/pg_ctl" -D "$PG_DATA" -l "$RUN/postgres.log" -w -t 60 \
      -o "-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null ||
      { tail_of "$RUN/postgres.log"; die "PostgreSQL start"; }
    echo postgres >>"$STARTED"
  fi
  head -n 1 "$PG_DATA/postmaster.pid" >"$RUN/postgres.pid"
  psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname='$DB_USER'" | grep -q 1 ||
    psql_admin -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD'" >/dev/null
  psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname='$DB_NAME'" | grep -q 1 ||
    psql_admin -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >/dev/null
}

psql_admin() { as_postgres "$(pg_bin)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 "$@"; }

stop_postgres() {
  local bin pid
  bin=$(pg_bin)
  pid=$(read_pid "$RUN/postgres.pid")
  if [ -n "$bin" ] && [ -f "$PG_DATA/PG_VERSION" ] && pid_alive "$pid"; then
    log "stopping PostgreSQL (pid $pid)"
    as_postgres "$bin/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || kill "$pid" || true
  fi
  rm -f "$RUN/postgres.pid"
}

# ---------------------------------------------------------------- NocoBase

tools() {
  if [ ! -x "$HOME_DIR/tools/node_modules/.bin/yarn" ]; then
    log "installing yarn $YARN_VERSION from the npm registry"
    npm install --prefix "$HOME_DIR/tools" --no-save "yarn@$YARN_VERSION" >"$RUN/tools.log" 2>&1 ||
      { tail_of "$RUN/tools.log"; die "npm install yarn"; }
  fi
  export PATH="$HOME_DIR/tools/node_modules/.bin:$PATH"
  export YARN_CACHE_FOLDER="$HOME_DIR/yarn-cache"
  command -v node >/dev/null || die "node is not installed (Node.js 20 is expected on this machine)"
}

set_env_line() { # file key value: replace or append KEY=value
  if grep -q "^$2=" "$1"; then sed -i "s|^$2=.*|$2=$3|" "$1"; else echo "$2=$3" >>"$1"; fi
}

install_app() {
  if [ -f "$APP_DIR/.installed-$NOCOBASE_VERSION" ]; then return; fi
  log "creating the NocoBase $NOCOBASE_VERSION application (create-nocobase-app, yarn install: minutes)"
  rm -rf "$APP_DIR"
  (cd "$HOME_DIR" && npx -y "create-nocobase-app@$NOCOBASE_VERSION" app -a -e DB_DIALECT=postgres) \
    >"$RUN/create.log" 2>&1 || { tail_of "$RUN/create.log"; die "create-nocobase-app"; }
  [ -f "$APP_DIR/package.json" ] || die "create-nocobase-app made no $APP_DIR/package.json"
  # Its default xlsx points outside the registries; 0.18.5 is on the npm registry.
  # @nocobase/devtools (a devDependency: building plugins, `yarn dev`) is not on the npm
  # registry this machine reaches; install and start need only @nocobase/app's cli-v1.
  node -e '
    const f = process.argv[1], p = JSON.parse(require("fs").readFileSync(f, "utf8"));
    p.resolutions = Object.assign({}, p.resolutions, { xlsx: "0.18.5" });
    delete p.devDependencies;
    require("fs").writeFileSync(f, JSON.stringify(p, null, 2) + "\n");
  ' "$APP_DIR/package.json"
  # A dependency asks for node 22; node 20 works.
  (cd "$APP_DIR" && yarn install --ignore-engines --network-timeout 600000) >"$RUN/yarn-install.log" 2>&1 ||
    { tail_of "$RUN/yarn-install.log"; die "yarn install"; }
  touch "$APP_DIR/.installed-$NOCOBASE_VERSION"
}

configure_app() {
  local f=$APP_DIR/.env
  [ -f "$f" ] || die "no $f"
  set_env_line "$f" APP_PORT "$PORT"
  set_env_line "$f" DB_DIALECT postgres
  set_env_line "$f" DB_HOST 127.0.0.1
  set_env_line "$f" DB_PORT "$PG_PORT"
  set_env_line "$f" DB_DATABASE "$DB_NAME"
  set_env_line "$f" DB_USER "$DB_USER"
  set_env_line "$f" DB_PASSWORD "$DB_PASSWORD"
  set_env_line "$f" INIT_ROOT_EMAIL "$ADMIN_EMAIL"
  set_env_line "$f" INIT_ROOT_PASSWORD "$ADMIN_PASSWORD"
}

install_db() {
  if [ -f "$HOME_DIR/db-installed" ]; then return; fi
  log "installing NocoBase into the database (yarn nocobase install)"
  (cd "$APP_DIR" && yarn nocobase install -f) >"$RUN/nocobase-install.log" 2>&1 ||
    { tail_of "$RUN/nocobase-install.log"; die "yarn nocobase install"; }
  touch "$HOME_DIR/db-installed"
  rm -f "$ENV_FILE"
}

# HTTP status of GET $1 (000 when nothing answers).
http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }

start_app() {
  local pid
  pid=$(read_pid "$RUN/nocobase.pid")
  if pid_alive "$pid"; then
    log "NocoBase already running (pid $pid)"
  else
    log "starting NocoBase on $URL"
    # A process group of its own, so that stop reaches yarn's children by the group's id.
    (cd "$APP_DIR" && exec setsid yarn nocobase start) >>"$RUN/nocobase.log" 2>&1 9>&- &
    echo $! >"$RUN/nocobase.pid"
    echo nocobase >>"$STARTED"
  fi
  wait_app
}

# NocoBase answers 503 APP_COMMANDING while it loads; up to 5 minutes on a busy machine.
wait_app() {
  local deadline=$((SECONDS + ${NOCOBASE_E2E_START_TIMEOUT:-300})) pid code
  pid=$(read_pid "$RUN/nocobase.pid")
  while :; do
    code=$(http_status "$URL/api/app:getInfo")
    [ "$code" = 200 ] && { log "NocoBase answers (pid $pid)"; return; }
    pid_alive "$pid" || { tail_of "$RUN/nocobase.log"; die "NocoBase exited while starting"; }
    [ $SECONDS -lt $deadline ] || { tail_of "$RUN/nocobase.log"; die "NocoBase did not answer on $URL in time (last HTTP $code)"; }
    sleep 1
  done
}

stop_app() {
  local pid
  pid=$(read_pid "$RUN/nocobase.pid")
  if pid_alive "$pid"; then
    log "stopping NocoBase (process group $pid)"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do pid_alive "$pid" || break; sleep 0.1; done
  fi
  rm -f "$RUN/nocobase.pid"
  # The port must be free before anyone starts it again.
  for _ in $(seq 50); do [ "$(http_status "$URL/api/app:getInfo")" = 000 ] && return; sleep 0.1; done
  die "something still answers on $URL after stopping NocoBase (not started by this script?)"
}

# Sign in as the admin, create an API key of role root, write the env file.
create_key() {
  local token key
  token=$(curl -sf --max-time 30 -X POST "$URL/api/auth:signIn" -H 'X-Authenticator: basic' \
    -H 'Content-Type: application/json' \
    -d "{\"account\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).data.token))') ||
    die "sign-in as $ADMIN_EMAIL"
  key=$(curl -sf --max-time 30 -X POST "$URL/api/apiKeys:create" -H "Authorization: Bearer $token" \
    -H 'X-Role: root' -H 'Content-Type: application/json' \
    -d "{\"name\":\"nocobase-mail-operator-e2e-$(date +%s)\",\"role\":{\"name\":\"root\"},\"expiresIn\":\"never\"}" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).data.token))') ||
    die "apiKeys:create"
  [ -n "$key" ] || die "apiKeys:create returned no token"
  umask 077
  cat >"$ENV_FILE.tmp" <<EOF
export NOCOBASE_E2E_URL=$URL
export NOCOBASE_E2E_API_KEY=$key
export NOCOBASE_E2E_SCRIPT=$SCRIPT_PATH
export NOCOBASE_E2E_HOME=$HOME_DIR
export NOCOBASE_E2E_PORT=$PORT
export NOCOBASE_E2E_ADMIN_EMAIL=$ADMIN_EMAIL
export NOCOBASE_E2E_ADMIN_PASSWORD=$ADMIN_PASSWORD
EOF
  mv "$ENV_FILE.tmp" "$ENV_FILE"
  log "API key created; env file $ENV_FILE"
}

# 0 when NocoBase answers the env file's key.
key_works() {
  [ -f "$ENV_FILE" ] || return 1
  local key
  key=$(sed -n 's/^export NOCOBASE_E2E_API_KEY=//p' "$ENV_FILE")
  [ "$(http_status -H "Authorization: Bearer $key" "$URL/api/environmentVariables:list?paginate=false")" = 200 ]
}

# The env file of an earlier start may name another checkout's copy of this script: the
# tests call NOCOBASE_E2E_SCRIPT to stop and start NocoBase, so it must be this one.
own_env_file() {
  sed -i "s|^export NOCOBASE_E2E_SCRIPT=.*|export NOCOBASE_E2E_SCRIPT=$SCRIPT_PATH|" "$ENV_FILE"
}

cmd_start() {
  mkdir -p "$RUN"
  exec 9>"$HOME_DIR/lock"
  flock 9
  if key_works; then
    # Started by someone else: a `stop-started` after this start stops nothing.
    : >"$STARTED"
    own_env_file
    log "reusing the running NocoBase on $URL"
    echo "$ENV_FILE"
    return
  fi
  local t0=$SECONDS
  : >"$STARTED"
  command -v curl >/dev/null || die "curl is not installed"
  install_postgres
  start_postgres
  tools
  install_app
  configure_app
  install_db
  start_app
  key_works || create_key
  own_env_file
  log "ready in $((SECONDS - t0)) s"
  echo "$ENV_FILE"
}

cmd_stop() {
  mkdir -p "$RUN"
  stop_app
  stop_postgres
}

# Stops only what the last `start` started (nothing when it reused a running instance).
cmd_stop_started() {
  mkdir -p "$RUN"
  if grep -qx nocobase "$STARTED" 2>/dev/null; then stop_app; fi
  if grep -qx postgres "$STARTED" 2>/dev/null; then stop_postgres; fi
  rm -f "$STARTED"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
stop-started) cmd_stop_started ;;
env) echo "$ENV_FILE" ;;
status) key_works ;;
app-stop) mkdir -p "$RUN" && stop_app ;;
app-start) mkdir -p "$RUN" && tools && start_app ;;
reset)
  cmd_stop
  rm -rf "$PG_DATA" "$HOME_DIR/db-installed" "$ENV_FILE"
  ;;
*)
  echo "usage: $0 start|stop|stop-started|env|status|app-stop|app-start|reset" >&2
  exit 2
  ;;
esac
