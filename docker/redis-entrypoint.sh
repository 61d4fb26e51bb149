#!/bin/sh
# germinator-redis-server: start redis-server for the germinator-dist seed table.
#
#   GERMINATOR_REDIS_PASSWORD=... germinator-redis-server [redis-server options ...]
#
# Reads the base configuration (docker/redis.conf: AOF on, appendfsync always) from $GERMINATOR_REDIS_CONF
# (default: redis.conf next to this script), writes it with `requirepass` added to a private temporary file
# (mode 0600, under $TMPDIR), and execs redis-server on that file: the password is never on a command line,
# in the process environment of redis-server, or in a log. Options given here override the file, e.g.
# `--port 6380 --bind 10.0.0.5 127.0.0.1 --dir /data`. Without a password it refuses to start.
#
# Installed as /usr/local/bin/germinator-redis-server in the project image (docker/Dockerfile); mounted next
# to redis.conf by docker/compose.yaml; repeated verbatim in cluster/kuberay/redis.yaml.
set -eu

die() {
  echo "germinator-redis-server: $*" >&2
  exit 2
}

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
conf=${GERMINATOR_REDIS_CONF:-$here/redis.conf}
[ -r "$conf" ] || die "cannot read the base configuration $conf (set GERMINATOR_REDIS_CONF)"

pw=${GERMINATOR_REDIS_PASSWORD:-}
hint="make one with: openssl rand -hex 32"
[ -n "$pw" ] || die "GERMINATOR_REDIS_PASSWORD is empty: refusing to start Redis without a password ($hint)"
[ "${#pw}" -ge 16 ] || die "GERMINATOR_REDIS_PASSWORD is shorter than 16 characters ($hint)"
case $pw in
  *[!A-Za-z0-9._~+/=-]*) die "GERMINATOR_REDIS_PASSWORD may hold only letters, digits and ._~+/=- ($hint)" ;;
esac

umask 077
run=$(mktemp -d "${TMPDIR:-/tmp}/germinator-redis.XXXXXX")
{
  cat "$conf"
  printf '\n# added by germinator-redis-server from GERMINATOR_REDIS_PASSWORD\nrequirepass %s\n' "$pw"
} >"$run/redis.conf"
unset pw GERMINATOR_REDIS_PASSWORD REDISCLI_AUTH
exec redis-server "$run/redis.conf" "$@"
