#!/usr/bin/env python3
"""OCI image layouts without a daemon or a registry (Python 3 standard library only).

  oci_pack.py registry BUNDLE_DIR REGISTRY_DIR --created-s S
      Registers a model bundle as version 1 of a fresh local registry, aliased `production`,
      in the layout silencio-mlops writes (aliases.json, model.json, versions/1/).
  oci_pack.py pack ROOTFS OUT_DIR --config CONFIG.json --created-s S [--own UID:GID:PATH]...
      Packs the staged ROOTFS as the one layer of an image whose container config (User,
      Entrypoint, Env, Labels, ...) is CONFIG.json, into the OCI image layout OUT_DIR.
  oci_pack.py unpack LAYOUT_DIR ROOTFS CONFIG_OUT
      Follows index.json -> manifest -> config and layers, checking every size and digest,
      extracts the layers into ROOTFS and copies the image config blob to CONFIG_OUT.

Packing is deterministic: entries sorted, one mtime, numeric owners (root unless --own says
otherwise), normalised modes, a gzip header without name or time. The same inputs give the
same digests, so an unchanged rebuild is recognisably the same image.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import sys
import tarfile
import time

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
# Python >= 3.12 (and 3.11.4) warns about or applies extraction filters unless told otherwise.
TRUSTED = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


def fail(msg):
    print(f"oci_pack: {msg}", file=sys.stderr)
    sys.exit(1)


def rfc3339(epoch_s):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


class Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `sink`."""

    def __init__(self, sink):
        self.sink, self.sha, self.size = sink, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.sha.update(b)
        self.size += len(b)
        self.sink.write(b)
        return len(b)

    def digest(self):
        return "sha256:" + self.sha.hexdigest()


class Sink(io.RawIOBase):
    """Discards (the tar stream's own hash is all that is kept of it)."""

    def writable(self):
        return True

    def write(self, b):
        return len(b)


# ---------------------------------------------------------------------------------------------
# registry


def register(a):
    with open(os.path.join(a.bundle, "bundle.json")) as f:
        meta = json.load(f)
    name = meta["name"]
    if os.path.exists(a.registry):
        fail(f"{a.registry} exists; the image's registry is made fresh")
    # The same layout silencio_common::registry defines and silencio-mlops writes. `source` says
    # where the bundle came from without naming a path on the build machine.
    shutil.copytree(a.bundle, os.path.join(a.registry, "versions", "1"))
    ms = a.created_s * 1000
    model = {
        "name": name,
        "description": "",
        "creation_timestamp": ms,
        "versions": [
            {
                "version": 1,
                "source": f"bundle {name}@{meta.get('version', '')} (scripts/build-image.sh)",
                "run_id": meta.get("provenance", {}).get("run_id"),
                "description": "registered in the image by scripts/build-image.sh",
                "tags": {},
                "creation_timestamp": ms,
            }
        ],
    }
    for file, value in (("model.json", model), ("aliases.json", {"production": "1"})):
        with open(os.path.join(a.registry, file), "w") as f:
            json.dump(value, f, indent=2)
            f.write("\n")
    print(f"registered {name}@{meta.get('version', '')} as version 1 (production)")


# ---------------------------------------------------------------------------------------------
# pack


def walk(root, rel=""):
    """Every path under `root`, relative, sorted by name, each directory before its contents
    (symlinks are listed, not followed)."""
    out = []
    for name in sorted(os.listdir(os.path.join(root, rel))):
        path = os.path.join(rel, name)
        out.append(path)
        full = os.path.join(root, path)
        if os.path.isdir(full) and not os.path.islink(full):
            out.extend(walk(root, path))
    return out


def write_layer(rootfs, owners, mtime, out):
    """Writes the gzip'd layer tar to `out`; returns (diff_id, digest, size)."""
    plain = Hashing(Sink())
    zipped = Hashing(out)

    class Tee(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            plain.write(b)
            gz.write(b)
            return len(b)

    # mtime=0 and no file name: the gzip header carries nothing of when or where.
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=zipped, compresslevel=6, mtime=0)
    with tarfile.open(fileobj=Tee(), mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in walk(rootfs):
            path = os.path.join(rootfs, rel)
            st = os.lstat(path)
            ti = tarfile.TarInfo(rel)
            ti.mtime = mtime
            ti.uid, ti.gid = owners.get(rel, (0, 0))
            ti.uname = ti.gname = ""
            if stat.S_ISLNK(st.st_mode):
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
                tar.addfile(ti)
            elif stat.S_ISDIR(st.st_mode):
                ti.type = tarfile.DIRTYPE
                # Only /tmp-like directories keep their sticky, world-writable mode.
                ti.mode = 0o1777 if st.st_mode & stat.S_ISVTX else 0o755
                tar.addfile(ti)
            elif stat.S_ISREG(st.st_mode):
                # Bundles are written 0600 by their owner: normalise, or uid 10001 cannot read.
                ti.mode = 0o755 if st.st_mode & 0o111 else 0o644
                ti.size = st.st_size
                with open(path, "rb") as f:
                    tar.addfile(ti, f)
            else:
                fail(f"{rel}: only files, directories and symlinks go into the image")
    gz.close()
    return plain.digest(), zipped.digest(), zipped.size


def put_blob(blobs, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest.split(":")[1]), "wb") as f:
        f.write(data)
    return digest, len(data)


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def pack(a):
    with open(a.config) as f:
        container = json.load(f)
    owners = {}
    for o in a.own:
        uid, gid, rel = o.split(":", 2)
        owners[os.path.normpath(rel.lstrip("/"))] = (int(uid), int(gid))
    if os.path.exists(a.out):
        # Replaced only when it is a layout already (or empty): --out is never a wrong guess away
        # from deleting a directory that matters.
        if os.listdir(a.out) and not os.path.isfile(os.path.join(a.out, "oci-layout")):
            fail(f"{a.out} exists and is not an OCI image layout; not replacing it")
        shutil.rmtree(a.out)
    blobs = os.path.join(a.out, "blobs", "sha256")
    os.makedirs(blobs)

    tmp = os.path.join(blobs, ".layer.tmp")
    with open(tmp, "wb") as f:
        diff_id, layer_digest, layer_size = write_layer(a.rootfs, owners, a.created_s, f)
    os.replace(tmp, os.path.join(blobs, layer_digest.split(":")[1]))

    created = rfc3339(a.created_s)
    config = {
        "created": created,
        "architecture": a.arch,
        "os": "linux",
        "config": container,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "scripts/build-image.sh"}],
    }
    config_digest, config_size = put_blob(blobs, canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": layer_digest, "size": layer_size}],
        "annotations": {
            k: v for k, v in container.get("Labels", {}).items() if k.startswith("org.opencontainers.")
        },
    }
    manifest_digest, manifest_size = put_blob(blobs, canonical(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": a.arch, "os": "linux"},
                # The tag that `oci:<dir>:<tag>` and `podman load` name it by.
                "annotations": {"org.opencontainers.image.ref.name": a.tag},
            }
        ],
    }
    with open(os.path.join(a.out, "index.json"), "wb") as f:
        f.write(canonical(index))
    with open(os.path.join(a.out, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    print(f"manifest {manifest_digest}")
    print(f"layer    {layer_digest} ({layer_size} bytes gzip'd)")


# ---------------------------------------------------------------------------------------------
# unpack


def read_blob(layout, desc, what):
    digest = desc.get("digest", "")
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
        fail(f"{what}: unsupported or malformed digest {digest!r}")
    path = os.path.join(layout, "blobs", "sha256", hexd)
    if not os.path.isfile(path):
        fail(f"{what}: blob {digest} is missing")
    size = os.path.getsize(path)
    if size != desc.get("size"):
        fail(f"{what}: blob {digest} is {size} bytes, the descriptor says {desc.get('size')}")
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    if sha.hexdigest() != hexd:
        fail(f"{what}: blob {digest} hashes to sha256:{sha.hexdigest()}")
    return path


def read_json_blob(layout, desc, what, media):
    if desc.get("mediaType") not in (None, media):
        fail(f"{what}: media type {desc.get('mediaType')!r}, expected {media}")
    with open(read_blob(layout, desc, what), "rb") as f:
        return json.load(f)


def safe_member(m, rootfs):
    """Refuses absolute names, `..`, devices and paths through symlinks: an image must not write
    outside its rootfs."""
    name = os.path.normpath(m.name)
    if name.startswith(("/", "..")) or m.isdev():
        fail(f"layer entry {m.name!r} is not allowed")
    if m.islnk() and os.path.normpath(m.linkname).startswith(("/", "..")):
        fail(f"hard link {m.name!r} -> {m.linkname!r} leaves the rootfs")
    root = os.path.realpath(rootfs)
    parent = os.path.realpath(os.path.join(rootfs, os.path.dirname(name)))
    if parent != root and not parent.startswith(root + os.sep):
        fail(f"layer entry {m.name!r} lies behind a symlink that leaves the rootfs")
    return name


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def unpack(a):
    layout = a.layout
    try:
        with open(os.path.join(layout, "oci-layout")) as f:
            version = json.load(f).get("imageLayoutVersion")
        with open(os.path.join(layout, "index.json")) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{layout} is not an OCI image layout: {e}")
    if version != "1.0.0":
        fail(f"oci-layout version {version!r}, expected 1.0.0")
    manifests = index.get("manifests") or []
    if len(manifests) != 1:
        fail(f"index.json lists {len(manifests)} manifests; expected one")
    manifest = read_json_blob(layout, manifests[0], "manifest", MEDIA_MANIFEST)
    config_path = read_blob(layout, manifest["config"], "config")
    if manifest["config"].get("mediaType") != MEDIA_CONFIG:
        fail(f"config: media type {manifest['config'].get('mediaType')!r}, expected {MEDIA_CONFIG}")
    with open(config_path, "rb") as f:
        config = json.load(f)
    layers = manifest.get("layers") or []
    diff_ids = config.get("rootfs", {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        fail(f"{len(layers)} layers but {len(diff_ids)} diff_ids in the config")
    os.makedirs(a.rootfs, exist_ok=True)
    for i, (desc, diff_id) in enumerate(zip(layers, diff_ids)):
        what = f"layer {i}"
        path = read_blob(layout, desc, what)
        media = desc.get("mediaType")
        if media not in (MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR):
            fail(f"{what}: media type {media!r} not supported")
        opener = gzip.open if media == MEDIA_LAYER_GZIP else open
        # The uncompressed stream must match the config's diff_id.
        sha = hashlib.sha256()
        with opener(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha.update(chunk)
        if "sha256:" + sha.hexdigest() != diff_id:
            fail(f"{what}: uncompressed sha256:{sha.hexdigest()} is not diff_id {diff_id}")
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                name = safe_member(m, a.rootfs)
                base = os.path.basename(name)
                if base.startswith(".wh."):
                    # A whiteout deletes what an earlier layer put there.
                    parent = os.path.join(a.rootfs, os.path.dirname(name))
                    if base == ".wh..wh..opq":
                        for e in os.listdir(parent):
                            remove(os.path.join(parent, e))
                    else:
                        remove(os.path.join(parent, base[4:]))
                    continue
                # Numeric owners and modes as packed (extraction runs as root); the checks above
                # stand in for the extraction filters, which Python before 3.11.4 lacks and whose
                # "tar" filter would clear /tmp's sticky bit.
                tar.extract(m, a.rootfs, set_attrs=True, numeric_owner=True, **TRUSTED)
    # The blob itself: its sha256 is the image id runtimes use.
    shutil.copyfile(config_path, a.config_out)
    print(f"unpacked {len(layers)} layer(s) of {manifests[0]['digest']}, every digest verified")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("registry")
    r.add_argument("bundle")
    r.add_argument("registry")
    r.add_argument("--created-s", type=int, required=True)
    k = sub.add_parser("pack")
    k.add_argument("rootfs")
    k.add_argument("out")
    k.add_argument("--config", required=True, help="the container config (User, Entrypoint, ...)")
    k.add_argument("--created-s", type=int, required=True, help="every mtime and `created`")
    k.add_argument("--own", action="append", default=[], metavar="UID:GID:PATH")
    k.add_argument("--arch", default="amd64")
    k.add_argument("--tag", default="latest")
    u = sub.add_parser("unpack")
    u.add_argument("layout")
    u.add_argument("rootfs")
    u.add_argument("config_out")
    a = p.parse_args()
    {"registry": register, "pack": pack, "unpack": unpack}[a.cmd](a)


if __name__ == "__main__":
    main()
