"""Zoo coverage on timm models: how much of each model the channel graph prunes, exactly, against Torch-Pruning.

    .venv/bin/python benchmarks/zoo_coverage.py --suite timm             # the development list (issue 11)
    .venv/bin/python benchmarks/zoo_coverage.py --suite timm --models convnext_nano resnet50 --resume

Per model (timm 1.0.x, ``pretrained=False, num_classes=10``, 96x96 input): prunable conv/linear output
channels, ours and Torch-Pruning's (its DependencyGraph's groups rooted at conv/linear layers; the classifier
excluded on both sides) and their ratio; the equivalence error of slim vs masked at 50% random masks on a copy
with random norm statistics, affine parameters and layer scales, and how much those masks change the output
(at least 100x the tolerance, or the check proves nothing); the graph build time of both; the submodules kept
whole because fx cannot trace them; and the frozen channels by reason (the largest first). Writes
``zoo_coverage_timm.md`` / ``.json`` (rewritten after every model; ``--resume`` skips finished models).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import torch
from bench_common import command_block
from torch import nn

import prunekit as pk
from prunekit.testing import check_equivalence

DEV_LIST = """resnet34 resnet50 seresnext50_32x4d resnext50d_32x4d regnetx_004 regnety_004 efficientnet_b1
efficientnet_lite0 tf_efficientnet_b0 mobilenetv2_050 mobilenetv3_large_075 mobilenetv3_rw mnasnet_100
fbnetv3_d lcnet_100 tinynet_b hardcorenas_c ghostnet_050 mixnet_m rexnet_150 cspresnext50 cs3darknet_m
darknet21 ese_vovnet39b densenet169 dpn92 repvgg_b0 convnext_nano convnextv2_nano nf_resnet50
eca_nfnet_l0 resnetv2_50d_gn gcresnet33ts mobileone_s1 fastvit_t12 edgenext_x_small poolformer_s24
efficientvit_b0 tf_mixnet_s regnety_006 vgg13_bn""".split()
# beyond the list: timm's vision transformers (their residual streams prune through the attention's
# qkv / proj layers); fixed 224x224 inputs
BEYOND = ["vit_tiny_patch16_224", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224"]
QUICK = ["resnet50", "convnext_nano", "tf_efficientnet_b0"]
SIZE = 96
SIZES = {name: 224 for name in BEYOND}
TOL = 1e-4
MIN_CHANGE = 100 * TOL


def make_model(name: str) -> nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10).eval()


def _reason_key(reason: str) -> str:
    """A frozen reason without its node name and layer names, so equal causes add up."""
    r = reason.split(": ", 1)[-1]
    r = re.sub(r"[\w.]+\.\d+[\w.]*", "<layer>", r)
    return re.sub(r"\(groups=\d+\)|\(\d+\)", "", r)[:110]


def distinct_channels(blocks, classifier: str, model: nn.Module | None = None) -> int:
    """How many distinct (module, output channel) pairs the coupled sets hold, the classifier's left out.
    With ``model``: only channels that exist (an index below the layer's output width). Torch-Pruning 1.6
    maps the channels of a split tensor to indices past the layer's width on CSP stages (cs3darknet_m: 192
    indices for a 96-channel conv), which would count phantom channels."""
    pairs = {pair for block in blocks for pair in block if pair[0] != classifier}
    if model is not None:
        mods = dict(model.named_modules())
        pairs = {(n, i) for n, i in pairs if i < mods[n].weight.shape[0]}
    return len(pairs)


def _ours_pairs(g, classifier: str) -> int:
    from tp_compare import ours_partition

    return distinct_channels(ours_partition(g), classifier)


def cover(name: str) -> dict:
    from tp_compare import classifier_of
    from zoo_coverage import tp_partition_guarded

    model = make_model(name)
    size = SIZES.get(name, SIZE)
    x = torch.randn(2, 3, size, size)
    row: dict = {"model": name, "input": size}
    t = time.perf_counter()
    g = pk.build_graph(model, x)
    row["build_s"] = time.perf_counter() - t
    eq = check_equivalence(model, x, ratio=0.5, seed=1, graph=g)
    cls_name, cls = classifier_of(model)
    reasons: Counter[str] = Counter()
    for f in g.frozen:
        reasons[_reason_key(f.reasons[0])] += f.size
    row.update(
        groups=len(g.groups), ours=_ours_pairs(g, cls_name), rel_error=eq.rel_error, changed=eq.changed,
        shape_ok=eq.shape_ok, stats=len(g.stats), opaque=dict(g.opaque),
        frozen_reasons=[[k, v] for k, v in reasons.most_common() if k not in ("model output", "model input")][:3],
    )  # fmt: skip
    try:
        theirs = tp_partition_guarded(model, x[:1], [cls])
        row["tp"] = distinct_channels(theirs, cls_name, model)
        row["tp_phantom"] = distinct_channels(theirs, cls_name) - row["tp"]
        row["tp_error"] = ""
    except Exception as e:
        row["tp"], row["tp_error"] = None, str(e)[:160]
    row["ratio"] = row["ours"] / row["tp"] if row.get("tp") else None
    return row


def passes(r: dict) -> bool:
    return r["rel_error"] <= TOL and r["shape_ok"] and (r["changed"] >= MIN_CHANGE or r["ours"] == 0)


def render(rows: list[dict], command: str, done: bool, total: int) -> str:
    import timm

    ok = sum(passes(r) for r in rows)
    at_09 = [r for r in rows if r.get("ratio") is not None and r["ratio"] >= 0.9]
    with_tp = [r for r in rows if r.get("ratio") is not None]
    lines = [
        "# Zoo coverage: timm",
        "",
        f"timm {timm.__version__}, `pretrained=False, num_classes=10`, {SIZE}x{SIZE} input (224x224 for the "
        f"transformers after the issue's list: {', '.join(BEYOND)}). "
        + ("" if done else f"**Partial: {len(rows)} of {total} models so far.** ")
        + f"{ok} of {len(rows)} models pass the equivalence check (slim vs masked, relative error <= {TOL:g}, on "
        "a copy with random norm statistics, affine parameters and layer scales; the masks must change the output "
        f"by >= {MIN_CHANGE:g}, or nothing is prunable). Where Torch-Pruning builds ({len(with_tp)} models), ours "
        f"reaches >= 0.9 of its prunable channels on {len(at_09)}.",
        "",
        "*Channels*: distinct prunable conv/linear output channels, classifier excluded (ours: in prunable groups; "
        "Torch-Pruning: in its DependencyGraph's groups rooted at conv/linear layers; each channel once, and only "
        "channels that exist: Torch-Pruning 1.6 maps a split tensor's channels to indices past the layer's "
        "width on CSP stages, which the count leaves out). Torch-Pruning prunes some "
        "sets inexactly (LayerNorm over channels, weight-standardized convs): a larger count there is not a "
        "set we could prune exactly. *Frozen*: our frozen channels by reason, the largest first (model input "
        "and output left out). *Build s*: our graph build on a shared 2-core machine (benchmarks/graph_build.py "
        "has the controlled comparison with Torch-Pruning).",
        "",
        "| model | ours | TP | ours/TP | rel. error | change | build s | kept whole (fx) | main frozen reasons |",
        "|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
        tp = str(r["tp"]) if r.get("tp") is not None else f"fails: {r['tp_error'][:60]}"
        opaque = ", ".join(f"{k} ({v.split(':')[0]})" for k, v in r["opaque"].items())[:80] or "-"
        why = "; ".join(f"{v} ch: {k}" for k, v in r["frozen_reasons"])[:220] or "-"
        lines.append(
            f"| {r['model']} | {r['ours']} | {tp} | {ratio} | {r['rel_error']:.1e} | {r['changed']:.2f} | "
            f"{r['build_s']:.1f} | {opaque} | {why} |"
        )
    lines += ["", *command_block(command)]
    return "\n".join(lines)


def run(models: list[str], out: Path, command: str, resume: bool) -> list[dict]:
    from prunekit.checkpoint import write_text

    path = out / "zoo_coverage_timm.json"
    rows: list[dict] = []
    if resume and path.exists():
        rows = [r for r in json.loads(path.read_text())["rows"] if r["model"] in models]
    done = {r["model"] for r in rows}
    for name in models:
        if name in done:
            continue
        try:
            row = cover(name)
        except Exception as e:  # recorded, never silently skipped
            row = {"model": name, "input": SIZE, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
                   "ours": 0, "rel_error": float("inf"), "changed": 0.0, "shape_ok": False, "opaque": {},
                   "frozen_reasons": [], "build_s": 0.0, "tp": None, "tp_error": "", "ratio": None}  # fmt: skip
        rows.append(row)
        rows.sort(key=lambda r: models.index(r["model"]))
        print(f"{name}: ours {row['ours']} tp {row.get('tp')} rel {row['rel_error']:.1e}", flush=True)
        complete = len(rows) == len(models)
        write_text(str(path), json.dumps({"command": command, "complete": complete, "rows": rows}, indent=1))
        write_text(str(out / "zoo_coverage_timm.md"), render(rows, command, complete, len(models)))
    return rows
