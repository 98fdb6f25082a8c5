#!/usr/bin/env bash
# Runs the image that scripts/build-image.sh wrote and checks the service in it:
#  1. unpacks the OCI layout (index.json -> manifest -> config and layers, every size and
#     digest verified) into a temporary rootfs;
#  2. starts it with podman when podman can run containers here, else under a plain chroot as
#     the image's user, with the image's Entrypoint, Cmd and Env (needs root);
#  3. waits for /readyz, identifies a real demo clip, reads /metrics, runs the image's health
#     check (inside the container, or inside the rootfs), stops the server with SIGTERM and
#     checks that it drained and exited 0; then removes everything it made.
# Exits non-zero with the reason on the first failure.
#
#   scripts/run-image.sh IMAGE_DIR
#
# SILENCIO_IMAGE_RUNTIME=podman|chroot picks the runtime (default: podman if it can run the
# image, else chroot, saying why podman could not).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: scripts/run-image.sh IMAGE_DIR" >&2; exit 2; }
[ -d "$1" ] || { echo "run-image.sh: FAILED: no image layout directory $1" >&2; exit 1; }
image=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."
runtime="${SILENCIO_IMAGE_RUNTIME:-auto}"
clip="datasets/demo/birdclef/train_audio/comyel/DEMO000002.ogg"

die() { echo "run-image.sh: FAILED: $*" >&2; exit 1; }
say() { echo "run-image.sh: $*"; }
for tool in python3 curl; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
[ -f "$clip" ] || die "the demo clip $clip is missing"

work=$(mktemp -d)
rootfs="$work/rootfs" log="$work/server.log"
server_pid="" container="" podman_image="" podman_pulled=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  if [ -n "$container" ]; then podman rm -f "$container" >/dev/null 2>&1 || true; fi
  if [ -n "$podman_pulled" ] && [ -n "$podman_image" ]; then
    podman rmi -f "$podman_image" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
# The server's log, shown when a check fails.
fail() {
  if [ -n "$container" ]; then podman logs "$container" >"$log" 2>&1 || true; fi
  [ -s "$log" ] && { echo "--- server log (last 40 lines)"; tail -n 40 "$log"; echo "---"; } >&2
  die "$@"
}

python3 scripts/oci_pack.py unpack "$image" "$rootfs" "$work/config.json" ||
  die "the layout at $image does not verify"
# Entrypoint + Cmd, Env, User and the health check's command, NUL-separated for bash.
field() {
  python3 - "$work/config.json" "$1" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1])).get("config", {})
what = sys.argv[2]
if what == "command":
    out = (c.get("Entrypoint") or []) + (c.get("Cmd") or [])
elif what == "env":
    out = c.get("Env") or []
elif what == "user":
    out = [c.get("User") or "0:0"]
elif what == "health":
    test = (c.get("Healthcheck") or {}).get("Test") or []
    if test[:1] != ["CMD"]:
        sys.exit(f"the image's health check is {test!r}; expected an exec form [\"CMD\", ...] (it has no shell)")
    out = test[1:]
elif what == "port":
    ports = [p.split("/")[0] for p in (c.get("ExposedPorts") or {}) if p.endswith("/tcp")]
    out = ports[:1]
sys.stdout.write("".join(f"{x}\0" for x in out))
EOF
}
mapfile -d '' command < <(field command)
mapfile -d '' env < <(field env)
mapfile -d '' health < <(field health)
user=$(field user | tr -d '\0')
port_in=$(field port | tr -d '\0')
[ ${#command[@]} -gt 0 ] || die "the image has no Entrypoint or Cmd"
[ ${#health[@]} -gt 0 ] || die "the image has no health check"
[ -n "$port_in" ] || die "the image exposes no TCP port"
[[ "$user" =~ ^[0-9]+:[0-9]+$ ]] || die "the image's User is $user; expected numeric uid:gid"
[ "${user%%:*}" != 0 ] || die "the image runs as root"
say "image: ${command[*]} as $user, port $port_in/tcp; health check: ${health[*]}"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

# podman: tried first; what fails (and why) is printed, and chroot takes over.
podman_global=() podman_run=()
podman_works() {
  command -v podman >/dev/null || { echo "podman is not installed"; return 1; }
  # podman's image id is the config's digest: an image already there before is left there.
  local id out
  id=$(sha256sum "$work/config.json" | cut -d" " -f1)
  podman image exists "$id" || podman_pulled=1
  out=$(podman pull -q "oci:$image" 2>&1) || { echo "podman pull oci:$image: $out"; return 1; }
  podman_image=$id
  if out=$(podman run --rm --entrypoint "${command[0]}" "$id" --version 2>&1); then
    return 0
  fi
  # Then with limits that a root without CAP_SYS_RESOURCE can set (podman asks for more), and
  # then also with runc, which runs where crun refuses a hybrid cgroup v1/v2 host.
  local tried="with podman's defaults: $out" nofile nproc flags rt
  nofile=$(ulimit -Hn) nproc=$(ulimit -Hu)
  if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
  podman_run=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
  local runtimes=("")
  if command -v runc >/dev/null; then runtimes+=(runc); fi
  for rt in "${runtimes[@]}"; do
    podman_global=()
    if [ -n "$rt" ]; then podman_global=(--runtime "$rt"); fi
    flags="${podman_global[*]:+${podman_global[*]} }${podman_run[*]}"
    if out=$(podman "${podman_global[@]}" run --rm "${podman_run[@]}" \
        --entrypoint "${command[0]}" "$id" --version 2>&1); then
      echo "podman runs the image with $flags ($tried)"
      return 0
    fi
    tried="$tried; with $flags: $out"
  done
  echo "podman cannot run it: $tried"
  return 1
}

start_podman() {
  container="silencio-image-check-$$"
  podman "${podman_global[@]}" run -d --name "$container" "${podman_run[@]}" \
    -p "127.0.0.1:$port:$port_in" \
    --health-cmd "$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "${health[@]}")" \
    "$podman_image" >/dev/null 2>"$work/podman.err" ||
    fail "podman run: $(cat "$work/podman.err")"
}

start_chroot() {
  [ "$(id -u)" -eq 0 ] || die "the chroot runtime needs root (or a working podman)"
  # The image's Env, with the address moved to a free loopback port: a chroot shares the host's
  # network. `env -i` first, so nothing of this shell's environment leaks in. (No WorkingDir:
  # chroot starts in /; the image's paths are absolute.)
  env+=("SILENCIO_ADDR=127.0.0.1:$port")
  env -i "${env[@]}" "$(command -v chroot)" --userspec="$user" "$rootfs" "${command[@]}" \
    >"$log" 2>&1 &
  server_pid=$!
}

# Not in $(…): podman_works sets the variables start_podman uses.
case "$runtime" in
  auto)
    if podman_works >"$work/podman.why"; then
      runtime=podman
    else
      say "$(cat "$work/podman.why"); so chroot"
      runtime=chroot
    fi ;;
  podman) podman_works >"$work/podman.why" || die "$(cat "$work/podman.why")" ;;
  chroot) ;;
  *) die "SILENCIO_IMAGE_RUNTIME=$runtime: use podman or chroot" ;;
esac
if [ "$runtime" = podman ] && [ -s "$work/podman.why" ]; then say "$(cat "$work/podman.why")"; fi
say "runtime: $runtime; server at $base"
t0=$(date +%s.%N)
"start_$runtime"

# Ready within 120 s (the model loads and warms up first).
ready=""
for _ in $(seq 600); do
  if curl -fsS -m 2 "$base/readyz" >"$work/ready.json" 2>/dev/null; then ready=1; break; fi
  if [ -n "$server_pid" ] && ! kill -0 "$server_pid" 2>/dev/null; then fail "the server exited"; fi
  if [ -n "$container" ] && [ "$(podman inspect -f '{{.State.Running}}' "$container")" != true ]; then
    fail "the container exited"
  fi
  sleep 0.2
done
[ -n "$ready" ] || fail "/readyz did not answer 200 within 120 s"
say "ready in $(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)") s: $(cat "$work/ready.json")"

curl -fsS -m 60 -H 'content-type: audio/ogg' --data-binary "@$clip" \
  "$base/v1/identify?top_k=3" >"$work/identify.json" 2>"$work/curl.err" ||
  fail "POST /v1/identify: $(cat "$work/curl.err")"
python3 - "$work/identify.json" <<'EOF' || fail "POST /v1/identify answered without predictions"
import json, sys
r = json.load(open(sys.argv[1]))
windows = r.get("windows") or []
assert windows and all(w.get("species") for w in windows), r
best = windows[0]["species"][0]
assert isinstance(best.get("score"), float) and best.get("code"), best
print(f"run-image.sh: identify: {len(windows)} window(s) from {r['model_version']}, "
      f"first window's top species {best['code']} ({best['score']:.3f})")
EOF

curl -fsS -m 10 "$base/metrics" >"$work/metrics.txt" 2>"$work/curl.err" ||
  fail "GET /metrics: $(cat "$work/curl.err")"
grep -q '^silencio_http_requests_total{route="/v1/identify",status="200"} [1-9]' "$work/metrics.txt" ||
  fail "/metrics does not count the identify request (silencio_http_requests_total)"
say "metrics: $(grep -c '^silencio_' "$work/metrics.txt") silencio_ samples, the identify request counted"

# The image's own health check, where the image runs it.
if [ "$runtime" = podman ]; then
  hc=$(podman healthcheck run "$container" 2>&1) || fail "podman healthcheck run: $hc"
  say "health check (podman healthcheck run): ${hc:-healthy}"
else
  hc=$(env -i "${env[@]}" "SILENCIO_HEALTHCHECK_URL=$base/readyz" "$(command -v chroot)" \
    --userspec="$user" "$rootfs" "${health[@]}" 2>&1) || fail "health check: $hc"
  say "health check (in the rootfs): $hc"
fi

# SIGTERM: the server drains and exits 0.
if [ "$runtime" = podman ]; then
  podman stop -t 30 "$container" >/dev/null 2>"$work/podman.err" ||
    fail "podman stop: $(cat "$work/podman.err")"
  code=$(podman inspect -f '{{.State.ExitCode}}' "$container")
  podman logs "$container" >"$log" 2>&1
else
  kill -TERM "$server_pid"
  code=0
  wait "$server_pid" || code=$?
  server_pid=""
fi
[ "$code" = 0 ] || fail "the server exited $code after SIGTERM"
grep -q "silencio serve: stopped" "$log" || fail "the server did not say it stopped"
say "stopped cleanly; image OK"
