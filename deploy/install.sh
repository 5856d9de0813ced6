#!/usr/bin/env bash
# Install Shoal on one server: the node binary, a system user, the data dir, /etc/shoal/shoal.env and the
# systemd unit that runs the agent; with --init or --join, also make the server a member of a mesh.
# Running it again is harmless: what is in place stays, a changed binary is swapped in and the agent restarted.
# docs/install.md is the guide; `install.sh --help` lists the options.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: install.sh [BINARY] [--init | --join ADDR --token TOKEN] [options]

Installs Shoal's node binary as /opt/shoal/bin/node, outside PATH (the `node` on PATH is Node.js), a `shoal`
system user, the data dir /var/lib/shoal, /etc/shoal/shoal.env and the systemd unit shoal.service, which runs
`/opt/shoal/bin/node agent --data-dir /var/lib/shoal`. Running it again is harmless.

BINARY (or --binary PATH) is a node binary built for this machine; without one, the script builds it from the
checkout it lives in, which needs Go.

  --init             create a new mesh with this server as its first node (`node init`); the admin and
                     join tokens are written to /etc/shoal/tokens, readable by root only
  --join ADDR        join the mesh through the server at ADDR (its IP, or IP:PORT of its QUIC port)
  --token TOKEN      the join token, with --join (or env SHOAL_JOIN_TOKEN)
  --api-token TOKEN  an API token of any role: with --join, wait until the mesh lists this server as a
                     Raft member (without one, the script waits for the join itself only)
  --name NAME        this server's name in the mesh (default: the host name)
  --bind IP          the address to listen on (default 127.0.0.1, which makes a mesh of one machine)
  --advertise IP     the address other servers reach this one at (default: --bind)
  --tag KEY=VALUE    a tag that environments select servers by (repeatable)
  --voters N         Raft voters the new mesh keeps: 1, 3 or 5 (with --init)
  --args "FLAGS"     extra flags for `node agent`, kept as SHOAL_ARGS in shoal.env
  --no-systemd       start the agent in the background without systemd (pid file and log in /run/shoal)
  -h, --help         this text

Paths, for tests and unusual layouts, come from the environment: SHOAL_PREFIX (/opt/shoal), SHOAL_DATA
(/var/lib/shoal), SHOAL_ETC (/etc/shoal), SHOAL_UNIT_DIR (/etc/systemd/system), SHOAL_RUN (/run/shoal),
SHOAL_USER (shoal; set it empty to run the node as the invoking user and create no user).
EOF
}

say() { printf 'shoal-install: %s\n' "$*"; }
die() {
  printf 'shoal-install: error: %s\n' "$*" >&2
  exit 1
}

prefix=${SHOAL_PREFIX:-/opt/shoal}
data=${SHOAL_DATA:-/var/lib/shoal}
etc=${SHOAL_ETC:-/etc/shoal}
unit_dir=${SHOAL_UNIT_DIR:-/etc/systemd/system}
run_dir=${SHOAL_RUN:-/run/shoal}
user=${SHOAL_USER-shoal}
# systemd is running when this directory exists (what sd_booted() checks); tests point it elsewhere.
systemd_marker=${SHOAL_SYSTEMD_MARKER:-/run/systemd/system}

bin=$prefix/bin/node
env_file=$etc/shoal.env
tokens_file=$etc/tokens
unit=$unit_dir/shoal.service
pid_file=$run_dir/agent.pid
log_file=$run_dir/agent.log
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The PATH the node and everything it starts (builds, hooks, apps) run with: the system's, never Shoal's own
# directory, so that `node` stays Node.js for them.
agent_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

src='' mode='' join_addr='' join_token=${SHOAL_JOIN_TOKEN:-} api_token='' name='' bind='' advertise='' voters=''
agent_args='' agent_args_set='' use_systemd=1
tags=()
while [ $# -gt 0 ]; do
  case $1 in
    --init) mode='init' ;;
    --join) mode='join'; join_addr=${2:?--join needs the address of a server in the mesh}; shift ;;
    --token) join_token=${2:?--token needs the join token}; shift ;;
    --api-token) api_token=${2:?--api-token needs a token}; shift ;;
    --name) name=${2:?--name needs a name}; shift ;;
    --bind) bind=${2:?--bind needs an IP address}; shift ;;
    --advertise) advertise=${2:?--advertise needs an IP address}; shift ;;
    --tag) tags+=(--tag "${2:?--tag needs KEY=VALUE}"); shift ;;
    --voters) voters=${2:?--voters needs 1, 3 or 5}; shift ;;
    --args) agent_args=${2?--args needs the flags, in one argument}; agent_args_set=1; shift ;;
    --binary) src=${2:?--binary needs a path}; shift ;;
    --no-systemd) use_systemd= ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$src" ] || die "one binary only: $src or $1?"; src=$1 ;;
  esac
  shift
done
if [ "$mode" = join ] && [ -z "$join_token" ] && [ ! -f "$data/node.json" ]; then
  die "--join needs --token: the join token printed by \`node init\` (in /etc/shoal/tokens on the first server) or by \`node token join\`"
fi
if [ -n "$user" ] && [ "$(id -u)" -ne 0 ]; then
  die "run this as root (sudo $0 ...): it creates the $user user and writes $prefix, $data and $etc"
fi

tmp=$(mktemp -d)
join_pid=
cleanup() {
  if [ -n "$join_pid" ] && kill -0 "$join_pid" 2>/dev/null; then kill -KILL "$join_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

changed= # set when the binary, the unit or shoal.env changed, so that a running agent is restarted

# --- the binary ------------------------------------------------------------------------------------------------
if [ -z "$src" ]; then
  go=$(command -v go || true)
  [ -n "$go" ] || [ ! -x /usr/local/go/bin/go ] || go=/usr/local/go/bin/go
  [ -n "$go" ] || die "no binary given and no Go to build one: pass a node binary built for this machine (go build -o bin/node ./cmd/node on a machine with Go)"
  [ -f "$here/../go.mod" ] || die "no binary given and $here/.. is not a Shoal checkout to build one from"
  say "building the node binary from $(cd "$here/.." && pwd)"
  (cd "$here/.." && "$go" build -o "$tmp/node" ./cmd/node) || die "go build failed (see above)"
  src=$tmp/node
fi
if [ ! -f "$src" ] || [ ! -x "$src" ]; then die "$src is not an executable file"; fi
# A Node.js binary passed by mistake would answer --help too: Shoal's names itself.
help=$("$src" --help 2>/dev/null) || true
[[ $help == *Shoal* ]] || die "$src is not Shoal's node binary, or does not run on this machine (built for another OS or CPU?)"

mkdir -p "$prefix/bin"
if [ -f "$bin" ] && cmp -s "$src" "$bin"; then
  say "binary: $bin is up to date"
else
  # Install beside it and rename: a running agent keeps its old inode, and no one ever sees half a file.
  install -m 0755 "$src" "$bin.new"
  mv -f "$bin.new" "$bin"
  changed=1
  say "binary: installed $bin"
fi
case ":${PATH:-}:" in
  *":$prefix/bin:"*) say "warning: $prefix/bin is on your PATH, where its node shadows Node.js's: take it off and call $bin by its path" ;;
esac

# --- user, data dir, settings ----------------------------------------------------------------------------------
if [ -n "$user" ] && ! getent passwd "$user" >/dev/null; then
  useradd --system --user-group --home-dir "$data" --no-create-home --shell /usr/sbin/nologin "$user"
  say "user: created the system user $user"
fi
if [ ! -d "$data" ]; then
  mkdir -p "$data"
  chmod 0750 "$data"
  [ -z "$user" ] || chown "$user:" "$data"
  say "data dir: created $data"
fi

# run_as runs the node as the service user, with the environment the unit gives it. It is a command prefix
# rather than a function so that a background job's $! is the node's own pid (env and setpriv exec).
home=${HOME:-/}
[ -n "$user" ] && home=$data
node_env=("PATH=$agent_path" "HOME=$home" LANG=C.UTF-8)
as_user=()
if [ -n "$user" ]; then
  as_user=(setpriv "--reuid=$user" "--regid=$(id -g "$user")" --init-groups --)
fi
run_as=(env -i "${node_env[@]}" "${as_user[@]}")

mkdir -p "$etc"
if [ ! -f "$env_file" ] || [ -n "$agent_args_set" ]; then
  cat >"$tmp/shoal.env" <<EOF
# Settings of the Shoal agent, read by shoal.service and by install.sh --no-systemd.
# SHOAL_ARGS: extra flags for 'node agent', for example --log-level debug or --metrics-open. The server's name,
# addresses and tags were fixed by 'node init' or 'node join' and are kept in $data/node.json.
# After a change: systemctl restart shoal
SHOAL_ARGS="$agent_args"
EOF
  if ! cmp -s "$tmp/shoal.env" "$env_file"; then
    install -m 0644 "$tmp/shoal.env" "$env_file"
    changed=1
    say "settings: wrote $env_file"
  fi
fi

# --- the systemd unit, with this install's paths ---------------------------------------------------------------
[ -f "$here/shoal.service" ] || die "$here/shoal.service is missing: run install.sh from a Shoal checkout or release, beside its unit file"
sed -e "s|/opt/shoal/bin/node|$bin|g" -e "s|/var/lib/shoal|$data|g" -e "s|/etc/shoal/shoal.env|$env_file|g" \
  "$here/shoal.service" >"$tmp/shoal.service"
if [ -n "$user" ]; then
  sed -i -e "s|^User=.*|User=$user|" -e "s|^Group=.*|Group=$user|" "$tmp/shoal.service"
else
  sed -i -e '/^User=/d' -e '/^Group=/d' "$tmp/shoal.service"
fi
mkdir -p "$unit_dir"
unit_changed=
if ! cmp -s "$tmp/shoal.service" "$unit"; then
  install -m 0644 "$tmp/shoal.service" "$unit"
  changed=1 unit_changed=1
  say "unit: installed $unit"
fi

# --- membership: init or join ----------------------------------------------------------------------------------
node_flags=(--data-dir "$data")
[ -z "$name" ] || node_flags+=(--name "$name")
[ -z "$bind" ] || node_flags+=(--bind "$bind")
[ -z "$advertise" ] || node_flags+=(--advertise "$advertise")
node_flags+=("${tags[@]}")

# stored KEY prints a field of node.json (written by init and join), without needing jq.
stored() { sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",}]*\).*/\1/p" "$data/node.json" | head -n 1; }
api_addr() {
  local host port
  host=$(stored advertise_ip)
  [ -n "$host" ] || host=$(stored bind_ip)
  [ -n "$host" ] || host=127.0.0.1
  port=$(stored http_port)
  [ -n "$port" ] && [ "$port" != 0 ] || port=7420
  case $host in *:*) host="[$host]" ;; esac
  printf '%s:%s' "$host" "$port"
}

# is_member asks this server's API whether the mesh lists it as alive and in Raft.
is_member() {
  local me
  me=$(stored name)
  SHOAL_TOKEN=$api_token timeout 10 "$bin" members --addr "$(api_addr)" 2>/dev/null |
    awk -v me="$me" '$1 == me && $2 == "alive" && ($3 == "voter" || $3 == "nonvoter") { found = 1 } END { exit !found }'
}

if [ -f "$data/node.json" ]; then
  [ -z "$mode" ] || say "$mode: $data already belongs to node $(stored name) of mesh $(stored mesh); nothing to do"
elif [ "$mode" = init ]; then
  [ -n "$bind" ] || say "note: no --bind, so the node listens on 127.0.0.1 and no other server can join it"
  (
    umask 077
    "${run_as[@]}" "$bin" init --exit "${node_flags[@]}" ${voters:+--voters "$voters"} >"$tmp/tokens" 2>"$tmp/init.log"
  ) || {
    cat "$tmp/init.log" >&2
    die "node init failed (its log is above)"
  }
  install -m 0600 "$tmp/tokens" "$tokens_file"
  say "init: created mesh $(stored mesh) with this server as $(stored name); the admin and join tokens are in $tokens_file (root only)"
  say "init: add servers with: install.sh --join $(stored advertise_ip) --token <the join token> --bind <their IP>"
elif [ "$mode" = join ]; then
  # `node join` keeps running as the agent once it has joined, and has no way to join and exit. Here systemd (or
  # --no-systemd) runs the agent, so the join runs in the background until it is done, and is then stopped with
  # SIGTERM, which keeps the node a member. A refusal that says to retry (the server has just started and not
  # caught up yet) and network errors are retried until the deadline; any other refusal is final.
  deadline=$((SECONDS + 120))
  joined=''
  while [ -z "$joined" ] && [ $SECONDS -lt $deadline ]; do
    # The token goes in the environment, where other users cannot read it (they can read command lines).
    env -i "${node_env[@]}" "SHOAL_JOIN_TOKEN=$join_token" "${as_user[@]}" "$bin" join "$join_addr" "${node_flags[@]}" \
      </dev/null >"$tmp/join.log" 2>&1 &
    join_pid=$!
    while [ $SECONDS -lt $deadline ] && kill -0 "$join_pid" 2>/dev/null; do
      if [ -f "$data/node.json" ] && grep -q '^joined as' "$tmp/join.log" && { [ -z "$api_token" ] || is_member; }; then
        joined=1
        break
      fi
      sleep 0.5
    done
    if [ -z "$joined" ] && ! kill -0 "$join_pid" 2>/dev/null; then
      wait "$join_pid" || true
      join_pid=''
      if ! grep -qiE 'retry|timeout|no recent network activity|connection refused|unreachable' "$tmp/join.log"; then
        cat "$tmp/join.log" >&2
        die "node join $join_addr failed (its log is above)"
      fi
      say "join: $(grep -m 1 '^error:' "$tmp/join.log" || echo 'not yet'); retrying"
      sleep 1
    fi
  done
  if [ -n "$join_pid" ]; then
    kill -TERM "$join_pid" 2>/dev/null || true
    stop_deadline=$((SECONDS + 30))
    while kill -0 "$join_pid" 2>/dev/null && [ $SECONDS -lt $stop_deadline ]; do sleep 0.2; done
    wait "$join_pid" 2>/dev/null || true
    join_pid=''
  fi
  if [ -z "$joined" ]; then
    cat "$tmp/join.log" >&2
    die "no join within 120s: check that $join_addr is reachable (UDP 7422; then TCP 7420 and TCP+UDP 7421 both ways) and that the token is still valid"
  fi
  if [ -n "$api_token" ]; then
    say "join: this server is $(stored name), a Raft member of mesh $(stored mesh)"
  else
    say "join: this server is $(stored name) of mesh $(stored mesh) (give --api-token to also wait until it is a Raft member)"
  fi
else
  say "this server is in no mesh yet: run install.sh again with --init (a new mesh) or --join ADDR --token TOKEN"
fi

# --- run the agent ---------------------------------------------------------------------------------------------
# agent_command prints the unit's ExecStart, with SHOAL_ARGS from shoal.env put in as systemd does (split on
# whitespace), one word a line: --no-systemd starts exactly what the unit would.
agent_command() {
  local line args word
  line=$(sed -n 's/^ExecStart=//p' "$unit")
  # shellcheck disable=SC1090 # shoal.env is this install's own settings file
  args=$(set +u; . "$env_file"; printf '%s' "${SHOAL_ARGS:-}")
  # shellcheck disable=SC2016 # the unit's literal text, not an expansion
  for word in $line; do
    case $word in
      '$SHOAL_ARGS' | '${SHOAL_ARGS}') for a in $args; do printf '%s\n' "$a"; done ;;
      *) printf '%s\n' "$word" ;;
    esac
  done
}

agent_pid() {
  local pid
  pid=$(cat "$pid_file" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qa agent "/proc/$pid/cmdline" 2>/dev/null && printf '%s' "$pid"
}

# wait_ready waits until the started agent serves: with a token, until the mesh lists this server as alive and in
# Raft (a restarted node needs a moment to catch up); without one, until its API port answers.
wait_ready() {
  local alive=$1 addr host deadline
  addr=$(api_addr)
  host=${addr%:*} host=${host#[} host=${host%]}
  deadline=$((SECONDS + 90))
  while [ $SECONDS -lt $deadline ] && $alive; do
    if [ -n "$api_token" ]; then
      if is_member; then return 0; fi
    elif (exec 3<>"/dev/tcp/$host/${addr##*:}") 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

if [ ! -f "$data/node.json" ]; then
  exit 0
fi
# After --init the admin token is at hand: use it to wait for a node that really serves.
if [ -z "$api_token" ] && [ -r "$tokens_file" ]; then
  api_token=$(sed -n 's/^admin token: //p' "$tokens_file")
fi
if [ -n "$use_systemd" ]; then
  if [ -d "$systemd_marker" ] && command -v systemctl >/dev/null; then
    [ -z "$unit_changed" ] || systemctl daemon-reload
    systemctl enable --quiet shoal.service
    if [ -n "$changed" ]; then
      systemctl restart shoal.service
    else
      systemctl start shoal.service
    fi
    wait_ready "systemctl is-active --quiet shoal.service" ||
      die "shoal.service did not come up: see systemctl status shoal; journalctl -u shoal"
    say "agent: shoal.service is running, API at http://$(api_addr) (systemctl status shoal; journalctl -u shoal -f)"
  else
    say "systemd is not running on this machine, so nothing starts the agent. Either start it yourself:"
    say "  ${user:+runuser -u $user -- }$(agent_command | paste -sd ' ')"
    say "or run this script again with --no-systemd to start it in the background."
  fi
  exit 0
fi

mkdir -p "$run_dir"
if pid=$(agent_pid); then
  if [ -z "$changed" ]; then
    say "agent: already running (pid $pid)"
    exit 0
  fi
  kill -TERM "$pid"
  stop_deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $stop_deadline ]; do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then die "the agent (pid $pid) did not stop within 30s of SIGTERM"; fi
fi
mapfile -t cmd < <(agent_command)
rm -f "$pid_file"
# A session of its own, so that the shell or terminal that ran this script can end without taking the agent
# along; the inner sh writes the pid of the process that then becomes the node.
# shellcheck disable=SC2016 # $0 and $@ belong to the inner sh
setsid sh -c 'echo $$ >"$0"; exec "$@"' "$pid_file" "${run_as[@]}" "${cmd[@]}" </dev/null >>"$log_file" 2>&1 &
started=$!
# Until the pid file is written, the pid of the background job stands in (it is the same process unless setsid
# had to fork).
agent_alive() {
  local pid
  pid=$(cat "$pid_file" 2>/dev/null) || pid=$started
  kill -0 "${pid:-$started}" 2>/dev/null
}
if ! wait_ready agent_alive; then
  tail -n 40 "$log_file" >&2
  die "the agent did not come up (the end of $log_file is above)"
fi
say "agent: running in the background (pid $(cat "$pid_file"), log $log_file), API at http://$(api_addr)"
