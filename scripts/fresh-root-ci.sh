#!/usr/bin/env bash
# Run the README's test line (Quick start, second line) in a fresh Debian 12 root, so that a
# missing install step fails CI instead of being covered by what this machine already has.
#
# The root is debootstrap's minbase plus sudo, python3, ca-certificates and git (a base
# tarball cached under /var/cache/conntui-ci), with this repository's HEAD cloned into
# /root/conntui. It runs as root, with an empty environment (env -i) except CI, in its own
# network namespace (slirp4netns gives it a NAT'd way out for apt and pip without touching
# the host's routes or firewall), so its tests cannot collide with anything on the host's
# loopback. The root is bind-mounted onto itself (`ip netns exec` inside needs / to be a
# mount point); /proc, /dev, /dev/pts and /sys are mounted in it; the host's CA bundle is
# copied. Everything is unmounted and removed afterwards, also on failure.
#
#   scripts/fresh-root-ci.sh            # HEAD of this clone
#   CONNTUI_CI_KEEP=1 scripts/...       # keep the root (its path is printed) to look around
#   CONNTUI_CI_COMMAND='bash -c "..."'  # run that in /root/conntui instead of .ci/test-line
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${CONNTUI_CI_CACHE:-/var/cache/conntui-ci}
base=$cache/bookworm-minbase-v1.tar.gz
ns=conntui-ci-$$
root=""
slirp=""

log() { echo "fresh-root-ci: $*" >&2; }

cleanup() {
  local rc=$?
  set +e
  if ip netns pids "$ns" >/dev/null 2>&1; then
    # whatever the run left behind in its namespace (a daemon, a container's conmon)
    for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null; done
  fi
  [ -n "$slirp" ] && kill "$slirp" 2>/dev/null && wait "$slirp" 2>/dev/null
  if [ -n "$root" ]; then
    umount -R "$root" 2>/dev/null || umount -R -l "$root"
    if findmnt -n -l -o TARGET | grep -qF "$root"; then
      log "still mounted under $root; not removing it"
    elif [ -n "${CONNTUI_CI_KEEP:-}" ]; then
      log "kept $root"
    else
      rm -rf --one-file-system "$root"
    fi
  fi
  ip netns del "$ns" 2>/dev/null
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The Debian mirror this machine's apt uses (no host named here).
mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' | awk '$2 == "bookworm" {print $1; exit}')
[ -n "$mirror" ] || mirror=$(apt-get indextargets --format '$(REPO_URI)' | grep -m1 '/debian/$')
[ -n "$mirror" ] || { log "no Debian mirror found in /etc/apt"; exit 1; }

if [ ! -s "$base" ]; then
  log "building the base root from $mirror (once; cached as $base)"
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/build.XXXXXX")
  debootstrap --variant=minbase --include=sudo,python3,ca-certificates,git bookworm "$tmp" "$mirror" \
    >"$cache/debootstrap.log" 2>&1 || { log "debootstrap failed; see $cache/debootstrap.log"; exit 1; }
  tar -C "$tmp" --numeric-owner -czf "$base.part" .
  rm -rf --one-file-system "$tmp"
  mv "$base.part" "$base"
fi

root=$(mktemp -d /var/tmp/conntui-ci.XXXXXX)
tar -C "$root" --numeric-owner -xzf "$base"
chmod 755 "$root"
git clone -q --no-hardlinks "$repo" "$root/root/conntui"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
echo "nameserver 10.0.2.3" >"$root/etc/resolv.conf" # slirp4netns's DNS forwarder
# the host name the root shares with this machine resolves, as on an installed system (sudo)
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$(uname -n)" \
  >"$root/etc/hosts"

ip netns add "$ns"
slirp4netns --configure --mtu=65520 --disable-host-loopback --netns-type=path "/run/netns/$ns" tap0 \
  >/dev/null 2>&1 &
slirp=$!
for _ in $(seq 50); do
  ip -n "$ns" -4 addr show tap0 2>/dev/null | grep -q inet && break
  sleep 0.1
done
ip -n "$ns" -4 addr show tap0 | grep -q inet || { log "slirp4netns did not configure tap0"; exit 1; }

mount --bind "$root" "$root"
mount --make-private "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"
mountpoint -q "$root/dev/pts" || mount --bind /dev/pts "$root/dev/pts"
# /sys as seen from the namespace (its interfaces), with the host's cgroup, tracing, debug
# and bpf file systems on top, as the host has them.
nsenter --net="/run/netns/$ns" mount -t sysfs sysfs "$root/sys"
for sub in fs/cgroup kernel/tracing kernel/debug fs/bpf kernel/security; do
  if mountpoint -q "/sys/$sub" && [ -d "$root/sys/$sub" ]; then
    mount --rbind "/sys/$sub" "$root/sys/$sub"
    mount --make-rslave "$root/sys/$sub"
  fi
done
mount -t tmpfs tmpfs "$root/run"
# /tmp stays on the root's disk, as Debian 12 installs it. (On a tmpfs /tmp, as in Debian 13,
# test_find_holders_stops_when_all_found_but_checks_fork_copies fails: its fake /proc lists
# fds newest first there, and the scan stops before the fork copy.)

log "root $root, network namespace $ns"
start=$(date +%s)
# In the background and waited for, so that a signal (CI cancelling the job) runs the
# clean-up at once: it kills whatever runs in the namespace. (A background job starts with
# SIGINT and SIGQUIT ignored, and Python then never raises KeyboardInterrupt: every signal
# goes back to its default, as in a foreground run; test_lab's Ctrl-C test failed without.)
nsenter --net="/run/netns/$ns" chroot "$root" /usr/bin/env --default-signal -i \
  HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin CI="${CI:-true}" \
  bash -c "cd /root/conntui && exec ${CONNTUI_CI_COMMAND:-.ci/test-line}" &
rc=0
wait $! || rc=$?
log "test line exited $rc after $(($(date +%s) - start)) s"
exit "$rc"
