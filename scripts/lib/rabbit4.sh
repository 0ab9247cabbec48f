# shellcheck shell=bash
# Shared by scripts/broker (--version 4.0) and scripts/cluster: a Debian 13 (trixie) tree with
# rabbitmq-server 4.0.5 built once with debootstrap and cached, nodes started inside it with chroot
# beside the system broker, and the wait loops. Source it; it defines functions and R4_* variables
# and runs nothing. The caller defines say() and die() (message; die also takes a hint).
#
# Layout (all under ${HOPBACK_BROKERS_DIR:-/var/cache/hopback-brokers}):
#   trixie/                         the tree itself (reused as is: a second run takes seconds)
#   trixie/.hopback-tree            written last when the tree is complete
# Inside the tree, per node NAME (rabbit4, c1, c2, c3):
#   /etc/rabbitmq/nodes/NAME.conf   its rabbitmq.conf (ports, loopback_users = none,
#                                   max_message_size = 128 MiB as in 3.x)
#   /var/lib/rabbitmq/nodes/NAME    its data (RABBITMQ_MNESIA_BASE)
#   /var/log/rabbitmq/NAME          its logs (RABBITMQ_LOG_BASE)
# Every node reads /etc/rabbitmq/enabled_plugins and runs as the tree's rabbitmq user with
# HOME=/var/lib/rabbitmq, so all share one Erlang cookie. The host's epmd (port 4369) serves them.

R4_CACHE="${HOPBACK_BROKERS_DIR:-/var/cache/hopback-brokers}"
R4_ROOT="${R4_CACHE}/trixie"
R4_SUITE=trixie
R4_MIRROR="${HOPBACK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
R4_PLUGINS=(rabbitmq_management rabbitmq_consistent_hash_exchange rabbitmq_shovel rabbitmq_shovel_management)
R4_TIMEOUT_S="${HOPBACK_BROKER_TIMEOUT_S:-120}"

r4_need_root() {
  [ "$(id -u)" -eq 0 ] || die "this needs root (debootstrap, mount, chroot)" "run it with sudo"
}

# Build the trixie tree once (debootstrap, ~2 minutes), under a lock so two runs never race.
r4_ensure_tree() {
  r4_need_root
  mkdir -p "$R4_CACHE"
  exec 9>"${R4_CACHE}/.lock"
  flock 9
  if [ ! -f "${R4_ROOT}/.hopback-tree" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
      command -v apt-get >/dev/null 2>&1 ||
        die "debootstrap is missing and this is not a Debian/Ubuntu box" "install debootstrap, then run again"
      say "installing debootstrap"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    [ -d "$R4_ROOT" ] && r4_is_mounted_under "$R4_ROOT" &&
      die "${R4_ROOT} is incomplete but has mounts in it" "unmount them (see 'findmnt -R ${R4_ROOT}') and run again"
    local tmp="${R4_ROOT}.partial"
    rm -rf --one-file-system "$tmp" "$R4_ROOT"
    say "building a Debian ${R4_SUITE} tree with rabbitmq-server in ${R4_ROOT} (debootstrap, a few minutes, once)"
    debootstrap --variant=minbase --include=rabbitmq-server "$R4_SUITE" "$tmp" "$R4_MIRROR" \
      >"${R4_CACHE}/debootstrap.log" 2>&1 ||
      die "debootstrap failed (log: ${R4_CACHE}/debootstrap.log)" \
        "check that ${R4_MIRROR} is reachable; set HOPBACK_DEBIAN_MIRROR to use another mirror"
    # The package's postinst may have started epmd inside the tree; the host's epmd is the one.
    r4_kill_in_tree "$tmp"
    printf '[%s].\n' "$(IFS=,; echo "${R4_PLUGINS[*]}")" >"${tmp}/etc/rabbitmq/enabled_plugins"
    mkdir -p "${tmp}/etc/rabbitmq/nodes"
    grep -qw localhost "${tmp}/etc/hosts" 2>/dev/null || echo '127.0.0.1 localhost' >>"${tmp}/etc/hosts"
    # shellcheck disable=SC2016 # dpkg-query expands ${Version} itself
    chroot "$tmp" dpkg-query -W -f='${Version}\n' rabbitmq-server >"${tmp}/.hopback-tree"
    mv "$tmp" "$R4_ROOT"
  fi
  flock -u 9
}

r4_version() { cat "${R4_ROOT}/.hopback-tree" 2>/dev/null; }

r4_is_mounted_under() { findmnt -rn -o TARGET | grep -q "^$1/"; }

# Processes whose root is the given tree (the nodes, their epmd if any).
r4_pids_in_tree() {
  local dir p
  dir=$(readlink -f "$1")
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$dir" ] && echo "${p#/proc/}"
  done
  return 0
}

r4_kill_in_tree() {
  local pids
  pids=$(r4_pids_in_tree "$1")
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086 # one pid per word
  kill $pids 2>/dev/null || true
}

# Bind-mount /proc, /dev and /sys into the tree, each only if not mounted already.
r4_mount() {
  local m
  for m in proc dev sys; do
    mountpoint -q "${R4_ROOT}/${m}" || mount --bind "/${m}" "${R4_ROOT}/${m}"
  done
}

# Undo r4_mount, but only when no process runs inside the tree any more (a stopped node's VM
# takes a moment to exit: wait up to 10 s for it).
r4_umount_if_idle() {
  local i m
  for i in $(seq 20); do
    [ -z "$(r4_pids_in_tree "$R4_ROOT")" ] && break
    [ "$i" -eq 20 ] && return 0
    sleep 0.5
  done
  for m in sys dev proc; do
    mountpoint -q "${R4_ROOT}/${m}" && umount "${R4_ROOT}/${m}"
  done
  return 0
}

# r4_node_env NAME AMQP_PORT DIST_PORT: the environment that makes a node NAME@localhost. A node
# with its own /etc/rabbitmq/nodes/NAME.plugins (written by r4_configure from R4_NODE_PLUGINS)
# reads that instead of the tree's enabled_plugins.
r4_node_env() {
  [ -f "${R4_ROOT}/etc/rabbitmq/nodes/$1.plugins" ] &&
    printf '%s ' "RABBITMQ_ENABLED_PLUGINS_FILE=/etc/rabbitmq/nodes/$1.plugins"
  printf '%s ' \
    "HOME=/var/lib/rabbitmq" \
    "RABBITMQ_NODENAME=$1@localhost" \
    "RABBITMQ_NODE_PORT=$2" \
    "RABBITMQ_DIST_PORT=$3" \
    "RABBITMQ_CONFIG_FILE=/etc/rabbitmq/nodes/$1.conf" \
    "RABBITMQ_MNESIA_BASE=/var/lib/rabbitmq/nodes/$1" \
    "RABBITMQ_LOG_BASE=/var/log/rabbitmq/$1"
}

# r4_run CMD...: run a shell command line as the tree's rabbitmq user.
r4_run() {
  chroot "$R4_ROOT" su -s /bin/sh rabbitmq -c "HOME=/var/lib/rabbitmq $*"
}

# r4_ctl NAME ARGS...: rabbitmqctl against NAME@localhost.
r4_ctl() {
  local name=$1
  shift
  r4_run rabbitmqctl -n "${name}@localhost" "$@"
}

r4_node_up() { r4_ctl "$1" -q ping >/dev/null 2>&1; }

# r4_configure NAME AMQP_PORT MGMT_PORT: write the node's config file and directories. Extra
# config lines come from R4_EXTRA_CONF; R4_NODE_PLUGINS (a plugin list) gives the node its own
# enabled-plugins file; R4_MGMT_LISTENER (default "management.tcp.port") names the management
# listener's port key (the TLS node serves HTTPS: "management.ssl.port").
r4_configure() {
  local name=$1
  mkdir -p "${R4_ROOT}/etc/rabbitmq/nodes"
  cat >"${R4_ROOT}/etc/rabbitmq/nodes/${name}.conf" <<EOF
# Written by hopback's scripts/lib/rabbit4.sh; rewritten on every start.
listeners.tcp.default = $2
${R4_MGMT_LISTENER:-management.tcp.port} = $3
loopback_users = none
# 3.x's default (4.x's is 16 MiB), so tests/big_message.rs's 128 MiB dead letter holds on both.
max_message_size = 134217728
${R4_EXTRA_CONF:-}
EOF
  rm -f "${R4_ROOT}/etc/rabbitmq/nodes/${name}.plugins"
  if [ -n "${R4_NODE_PLUGINS:-}" ]; then
    printf '[%s].\n' "$(echo "$R4_NODE_PLUGINS" | tr ' ' ',')" >"${R4_ROOT}/etc/rabbitmq/nodes/${name}.plugins"
  fi
  mkdir -p "${R4_ROOT}/var/lib/rabbitmq/nodes/${name}" "${R4_ROOT}/var/log/rabbitmq/${name}"
  chroot "$R4_ROOT" chown -R rabbitmq:rabbitmq "/var/lib/rabbitmq/nodes/${name}" "/var/log/rabbitmq/${name}"
}

# r4_start NAME AMQP_PORT MGMT_PORT DIST_PORT: start the node unless it already runs.
r4_start() {
  local name=$1
  r4_mount
  if r4_node_up "$name"; then
    # The Erlang node runs; its app may have been stopped (cluster stop-node --app).
    r4_ctl "$name" -q start_app >/dev/null 2>&1 || true
    return 0
  fi
  r4_configure "$name" "$2" "$3"
  say "starting RabbitMQ $(r4_version) node ${name}@localhost (AMQP :$2, management :$3, dist :$4)"
  r4_run "$(r4_node_env "$name" "$2" "$4")" rabbitmq-server -detached \
    >>"${R4_ROOT}/var/log/rabbitmq/${name}/start.out" 2>&1 ||
    die "could not start ${name}@localhost" "see ${R4_ROOT}/var/log/rabbitmq/${name}/"
}

# r4_stop NAME: stop the node (the Erlang VM) if it runs.
r4_stop() {
  r4_node_up "$1" || return 0
  say "stopping ${1}@localhost"
  r4_ctl "$1" -q stop >/dev/null 2>&1 || true
}

amqp_up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# r4_wait_ready NAME AMQP_PORT MGMT_PORT: wait for the node, its AMQP port and its management API.
r4_wait_ready() {
  local name=$1 amqp=$2 mgmt=$3 deadline
  deadline=$(($(date +%s) + R4_TIMEOUT_S))
  until r4_ctl "$name" -q await_startup --timeout 5 >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$deadline" ] && die "${name}@localhost did not start within ${R4_TIMEOUT_S}s" \
      "look at ${R4_ROOT}/var/log/rabbitmq/${name}/*.log (HOPBACK_BROKER_TIMEOUT_S raises the limit)"
    sleep 1
  done
  # shellcheck disable=SC2086 # R4_CURL_OPTS is a list of words
  until amqp_up "$amqp" && curl -fsS -o /dev/null -u guest:guest ${R4_CURL_OPTS:-} "${R4_MGMT_SCHEME:-http}://${R4_MGMT_HOST:-127.0.0.1}:${mgmt}/api/overview"; do
    [ "$(date +%s)" -ge "$deadline" ] && die "AMQP on :${amqp} or the management API on :${mgmt} of ${name}@localhost did not answer within ${R4_TIMEOUT_S}s" \
      "is another process on those ports? ('ss -ltnp'); logs: ${R4_ROOT}/var/log/rabbitmq/${name}/"
    sleep 1
  done
}

r4_mgmt_version() {
  # shellcheck disable=SC2086 # R4_CURL_OPTS is a list of words
  curl -fsS -u guest:guest ${R4_CURL_OPTS:-} "${R4_MGMT_SCHEME:-http}://${R4_MGMT_HOST:-127.0.0.1}:$1/api/overview" | sed -n 's/.*"rabbitmq_version":"\([^"]*\)".*/\1/p'
}

# r4_tls_material DIR: a private CA and the certificates the TLS node and the tests use, made once
# with openssl and kept in DIR (made again only when missing or within 30 days of expiry):
#   ca.pem ca.key             the private CA ("hopback test CA")
#   server.pem server.key     localhost, 127.0.0.1 and ::1, signed by the CA
#   client.pem client.key     CN=guest (for EXTERNAL auth), signed by the CA
#   other-ca.pem              a CA nobody signed with (the "wrong CA" case)
r4_tls_material() {
  local dir=$1
  mkdir -p "$dir"
  if [ -f "$dir/server.pem" ] && openssl x509 -checkend 2592000 -noout -in "$dir/server.pem" >/dev/null 2>&1 &&
    [ -f "$dir/client.pem" ] && [ -f "$dir/other-ca.pem" ]; then
    return 0
  fi
  command -v openssl >/dev/null 2>&1 || die "openssl is missing" "apt-get install openssl"
  say "making a private CA and certificates in $dir"
  (
    cd "$dir" || exit 1
    openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=hopback test CA" \
      -keyout ca.key -out ca.pem >/dev/null 2>&1
    openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=hopback other CA" \
      -keyout other-ca.key -out other-ca.pem >/dev/null 2>&1
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr >/dev/null 2>&1
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
      -extfile server.ext -out server.pem >/dev/null 2>&1
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl req -newkey rsa:2048 -nodes -subj "/CN=guest" -keyout client.key -out client.csr >/dev/null 2>&1
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
      -extfile client.ext -out client.pem >/dev/null 2>&1
    rm -f ./*.csr ./*.ext
  ) || die "making the TLS material failed" "remove $dir and run again"
  chmod 0644 "$dir"/*.pem
  chmod 0600 "$dir"/*.key
}
