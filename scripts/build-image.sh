#!/usr/bin/env bash
# Builds an OCI image layout of `silencio serve` FROM scratch, without a container daemon or
# registry: the binary, exactly the shared libraries it loads, a non-root user (10001
# `silencio`), /tmp, and a local model registry holding one model as `production`.
# scripts/run-image.sh runs and checks it; deploy/IMAGE.md says how to load and run it.
#
#   scripts/build-image.sh [--binary PATH] [--model BUNDLE_DIR] [--out DIR] [--tag TAG]
#
#   --binary  the `silencio` to ship (default: build it, `cargo build --release -p silencio`).
#   --model   the model bundle to register (default: the registry's production, else staging,
#             version, as `silencio serve` picks it: $SILENCIO_REGISTRY, else ./registry, which
#             `cargo run --release -p trainer` fills; with none there, an untrained bundle of
#             the demo taxonomy from `silencio bundle create`, which trains nothing: its scores
#             are random, but the image runs end to end).
#   --out     the layout directory (default: target/image; replaced).
#   --tag     the tag the layout names the image by (default: latest).
#
# Reproducible: every mtime and the `created` dates are $SOURCE_DATE_EPOCH (default: the last
# commit's time), so the same binary and model give the same digests.
set -euo pipefail

binary="" model="" out="" tag="latest"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
die() { echo "build-image.sh: $*" >&2; exit 1; }
t0=$(date +%s)
# Paths given are the caller's; the rest of the script runs from the repository root.
abs() { case "$1" in ""|/*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
binary=$(abs "$binary"); model=$(abs "$model"); out=$(abs "$out")
cd "$(dirname "$0")/.."
out="${out:-$PWD/target/image}"

if [ -z "$binary" ]; then
  cargo build --release -p silencio
  binary="${CARGO_TARGET_DIR:-target}/release/silencio"
fi
[ -x "$binary" ] || die "no executable at $binary"
for tool in ldd python3; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$root/usr/share/doc/silencio" \
  "$root/var/lib/silencio/data"
chmod 1777 "$root/tmp"

# The binary without its DWARF line tables (40 % of the dev-profile binary); the symbol table
# stays, so a panic's backtrace still names functions.
if command -v strip >/dev/null; then
  strip --strip-debug -o "$root/usr/local/bin/silencio" "$binary"
else
  cp "$binary" "$root/usr/local/bin/silencio"
fi
chmod 0755 "$root/usr/local/bin/silencio"

# Exactly what the dynamic loader maps: `ldd` lists each library and the loader itself
# (PT_INTERP); each goes to the path it is named by, as a plain file.
deps=$(ldd "$binary") || die "ldd $binary failed: a dynamically linked binary is expected"
if grep -q "not found" <<<"$deps"; then die "$(grep "not found" <<<"$deps")"; fi
libs=$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$deps" | sort -u)
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# The libraries are redistributed (glibc: LGPL-2.1+, libgcc_s: GPL-3+ with the GCC runtime
# exception): their Debian copyright files travel with them.
if command -v dpkg >/dev/null; then
  for lib in $libs; do
    # With merged /usr, dpkg knows a library by one of its two names.
    pkg=""
    for name in "$lib" "$(readlink -f "$lib")"; do
      [ -n "$pkg" ] || pkg=$(dpkg -S "$name" 2>/dev/null | head -1 | cut -d: -f1 || true)
    done
    if [ -n "$pkg" ] && [ -f "/usr/share/doc/$pkg/copyright" ]; then
      mkdir -p "$root/usr/share/doc/$pkg"
      cp "/usr/share/doc/$pkg/copyright" "$root/usr/share/doc/$pkg/copyright"
    else
      die "no Debian copyright file found for $lib: its licence must ship with the image"
    fi
  done
else
  die "dpkg is needed to find the licences of $libs"
fi

# A non-root user for the server; root only owns the files.
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
silencio:x:10001:10001:silencio:/var/lib/silencio:/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
silencio:x:10001:
EOF
# The demo data's and the models' licences ask that their notices travel with copies.
cp NOTICES.md "$root/usr/share/doc/silencio/NOTICES.md"

# The model, registered the way silencio-mlops lays out a local registry.
if [ -z "$model" ]; then
  reg="${SILENCIO_REGISTRY:-registry}"
  version=""
  if [ -f "$reg/aliases.json" ]; then
    version=$(python3 -c 'import json, sys
a = json.load(open(sys.argv[1]))
print(a.get("production") or a.get("staging") or "")' "$reg/aliases.json")
  fi
  if [ -n "$version" ]; then
    model="$reg/versions/$version"
    echo "model: $reg version $version (the one \`silencio serve\` would pick)"
  else
    model="$stage/untrained"
    echo "model: none registered in $reg; an untrained bundle of the demo taxonomy (random scores)"
    "$binary" bundle create --arch efficientnet_lite0 --name demo-untrained \
      --taxonomy datasets/demo/birdclef/taxonomy.csv --out "$model"
  fi
fi
[ -f "$model/bundle.json" ] || die "$model is not a model bundle (no bundle.json)"
registry="$root/var/lib/silencio/registry"
python3 scripts/oci_pack.py registry "$model" "$registry" --created-s "$epoch"
# Opened by the binary being shipped: the weights match their hash and the parts agree.
"$binary" bundle check "$registry/versions/1" >/dev/null

# The container config.
version=$("$binary" --version | awk '{ print $2 }')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
python3 - "$model/bundle.json" "$stage/config.json" "$epoch" "$version" "$revision" <<'EOF'
import json, sys, time
bundle, out, epoch, version, revision = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
meta = json.load(open(bundle))
licences = sorted({l["id"] for l in meta.get("provenance", {}).get("licences", [])})
second = 1_000_000_000  # Docker's health check durations are in nanoseconds.
config = {
    "User": "10001:10001",
    # Flags come from the environment below, so that `-e SILENCIO_…` overrides them and
    # arguments after the image name (`--non-commercial`, `--replicas 2`) add to them.
    "Entrypoint": ["/usr/local/bin/silencio", "serve"],
    "Cmd": [],
    "Env": [
        "PATH=/usr/local/bin",
        "SILENCIO_ADDR=0.0.0.0:8080",
        "SILENCIO_REGISTRY=/var/lib/silencio/registry",
        "SILENCIO_DATA_DIR=/var/lib/silencio/data",
    ],
    "WorkingDir": "/var/lib/silencio",
    "ExposedPorts": {"8080/tcp": {}},
    "StopSignal": "SIGTERM",
    # Docker's field (the OCI spec has none): Docker reads it, and podman for an image in
    # Docker's format (deploy/IMAGE.md).
    "Healthcheck": {
        "Test": ["CMD", "/usr/local/bin/silencio", "healthcheck"],
        "Interval": 30 * second,
        "Timeout": 5 * second,
        # Loading and warming the model comes before /readyz says 200.
        "StartPeriod": 60 * second,
        "Retries": 3,
    },
    "Labels": {
        "org.opencontainers.image.title": "silencio",
        "org.opencontainers.image.description": "El Silencio Acoustic Explorer: the bird-call "
        "identification HTTP service (silencio serve) with one registered model",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)),
        # The software's licence and the model's (its weights, data and what they derive from);
        # /usr/share/doc/silencio/NOTICES.md has the notices.
        "org.opencontainers.image.licenses": " AND ".join(["Apache-2.0"] + licences),
        "silencio.model": f"{meta['name']}@{meta.get('version', '')}",
        "silencio.model.trained": str(meta.get("provenance", {}).get("trained", False)).lower(),
        "silencio.model.licences": ",".join(licences),
    },
}
json.dump(config, open(out, "w"), indent=2)
# The server's own rule (silencio_infer::licence): any Creative Commons NC variant.
nc = [l for l in licences if "NC" in l.upper().replace(" ", "-").split("-")]
if nc or not licences:
    print(f"build-image.sh: warning: the model's licences ({', '.join(licences) or 'none recorded'}) "
          "do not allow commercial use; the server refuses it unless run with --non-commercial "
          "(or SILENCIO_NON_COMMERCIAL=true)", file=sys.stderr)
EOF

# Files belong to root. 10001 writes the server's data, and new versions and aliases in the
# registry (the server only reads it, but `silencio ensemble --register` or a pipeline run as
# the image's user registers into it); /tmp is 1777.
python3 scripts/oci_pack.py pack "$root" "$out" --config "$stage/config.json" \
  --created-s "$epoch" --tag "$tag" \
  --own 10001:10001:var/lib/silencio/data \
  --own 10001:10001:var/lib/silencio/registry \
  --own 10001:10001:var/lib/silencio/registry/versions

packed=$(du -sb "$out/blobs" | awk '{ print $1 }')
unpacked=$(du -sb "$root" | awk '{ print $1 }')
echo "image: $out (tag $tag), $(awk -v b="$packed" 'BEGIN { printf "%.1f", b / 1048576 }') MiB" \
  "as stored (gzip), $(awk -v b="$unpacked" 'BEGIN { printf "%.1f", b / 1048576 }') MiB unpacked;" \
  "built in $(( $(date +%s) - t0 )) s"
