# Sourced (not run) by scripts/container-smoke and scripts/fleet-compose-smoke: a private
# dockerd and local stand-ins for the registry images they need, since no registry is
# reachable on the machines they run on (see /work/shared/notes/containers.md).
#
# The caller defines step() and fail() and sets W, an empty work folder that it removes.
# These functions set DOCKER (the client), DPID (dockerd's pid) and export DOCKER_HOST.
# shellcheck shell=bash

DOCKER=${DOCKER:-docker}
DPID=""

# Installs docker.io and mmdebstrap when missing, and picks the client shipped with that
# dockerd (docker.io puts dockerd in /usr/sbin, docker in /usr/bin): same API version and
# builder, whatever other client is first on PATH.
docker_packages() {
  if ! command -v dockerd >/dev/null || ! command -v mmdebstrap >/dev/null; then
    step "installing docker.io and mmdebstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io mmdebstrap >/dev/null
  fi
  local dir
  for dir in "$(dirname "$(command -v dockerd)")" /usr/bin; do
    if [ -x "$dir/docker" ]; then
      DOCKER="$dir/docker"
      return 0
    fi
  done
}

# dockerd_start host|own-network: starts dockerd with all its state under $W and its
# socket at $W/docker.sock, and waits until it answers. `host`: on the machine's network,
# with no bridge and no iptables rules, for builds and runs with --network host.
# `own-network`: in a network namespace of its own (only loopback, up), where it makes its
# bridges and iptables rules as usual; they vanish with it.
dockerd_start() {
  local prefix=() args=(--data-root "$W/data" --exec-root "$W/exec"
    -H "unix://$W/docker.sock" --pidfile "$W/dockerd.pid")
  case $1 in
    host) args+=(--bridge=none --iptables=false --ip-forward=false) ;;
    own-network)
      # shellcheck disable=SC2016 # "$@" is expanded by the inner shell
      prefix=(unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh)
      ;;
    *) fail "dockerd_start: unknown network '$1'" ;;
  esac
  "${prefix[@]}" dockerd "${args[@]}" >>"$W/dockerd.log" 2>&1 &
  DPID=$!
  export DOCKER_HOST="unix://$W/docker.sock"
  for _ in $(seq 100); do
    "$DOCKER" info >/dev/null 2>&1 && return 0
    kill -0 "$DPID" 2>/dev/null || fail "dockerd exited"
    sleep 0.2
  done
  fail "dockerd did not come up in 20 s"
}

# Removes every container left, then stops dockerd (which stops its containerd) and
# releases what it mounted. Safe to call twice, and with no dockerd.
dockerd_stop() {
  [ -n "$DPID" ] || return 0
  local left
  left=$("$DOCKER" ps -aq 2>/dev/null)
  # shellcheck disable=SC2086 # one id per word
  [ -z "$left" ] || "$DOCKER" rm -f $left >/dev/null 2>&1
  kill "$DPID" 2>/dev/null || true
  wait "$DPID" 2>/dev/null || true
  DPID=""
  # Not mounted when dockerd ran in a namespace of its own.
  umount "$W/exec/netns/default" 2>/dev/null || true
}

# standin TAG PACKAGES [docker import --change...]: unless TAG exists, makes it from
# Debian bookworm's PACKAGES (comma-separated) with mmdebstrap, with this machine's extra
# CA certificates (so pip reaches PyPI in a build) and any STANDIN_HOOKS (mmdebstrap
# --customize-hook scripts; "$1" is the root).
STANDIN_HOOKS=()
standin() {
  local tag=$1 packages=$2
  shift 2
  if "$DOCKER" image inspect "$tag" >/dev/null 2>&1; then
    step "$tag present"
    return 0
  fi
  local changes=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --change 'ENV LANG=C.UTF-8')
  local change hooks=() hook
  for change in "$@"; do changes+=(--change "$change"); done
  for hook in "${STANDIN_HOOKS[@]}"; do hooks+=(--customize-hook="$hook"); done
  # shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's hook shell
  mmdebstrap --quiet --variant=minbase --include="ca-certificates,$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1"/usr/local/share/ca-certificates/ 2>/dev/null || true; chroot "$1" update-ca-certificates >/dev/null 2>&1' \
    "${hooks[@]}" bookworm - /etc/apt/sources.list.d/debian.sources |
    "$DOCKER" import "${changes[@]}" - "$tag" >/dev/null ||
    fail "could not make the stand-in $tag"
  step "stand-in $tag made with mmdebstrap (Debian's $packages)"
}

# python:3.11-slim: bookworm's python3 is 3.11, with pip usable as root and `python`.
standin_python() {
  # shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's hook shell
  STANDIN_HOOKS=('rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED; ln -sf /usr/bin/python3 "$1"/usr/local/bin/python; ln -sf /usr/bin/pip3 "$1"/usr/local/bin/pip')
  standin python:3.11-slim python3,python3-pip,python3-venv 'CMD ["python3"]'
}

# redis:7.2-alpine: Debian's redis-server (7.0), in /data like the official image.
standin_redis() {
  # shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's hook shell
  STANDIN_HOOKS=('mkdir -p "$1"/data')
  standin redis:7.2-alpine redis-server 'WORKDIR /data' 'VOLUME /data' 'EXPOSE 6379' \
    'CMD ["redis-server"]'
}

# nginx:1.27-alpine: Debian's nginx (1.22), which like the official image reads
# /etc/nginx/conf.d/*.conf inside http {}; without Debian's default site, logging to the
# container's output, in the foreground.
standin_nginx() {
  # shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's hook shell
  STANDIN_HOOKS=('rm -f "$1"/etc/nginx/sites-enabled/default; ln -sf /dev/stdout "$1"/var/log/nginx/access.log; ln -sf /dev/stderr "$1"/var/log/nginx/error.log')
  standin nginx:1.27-alpine nginx 'EXPOSE 80' 'CMD ["nginx", "-g", "daemon off;"]'
}
