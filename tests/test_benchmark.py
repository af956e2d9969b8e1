"""The full-size stand-ins the benchmark loads, and the benchmark script itself on tiny stand-ins."""
import json
import os
import subprocess
import sys
import tempfile

import pytest

from clip_models.standins import write_standins

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _offline_env(cache):
    # A process of its own: the hub libraries read HF_HUB_CACHE at import, and this session's cache
    # holds the tiny stand-ins under the same hub ids.
    python_path = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": python_path}


def test_write_standins_writes_the_named_backbones_only(tmp_path):
    weights = write_standins(tmp_path, names=["clip"])
    assert list(weights) == ["clip"]
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["models--" + weights["clip"].replace("/", "--")]
    with pytest.raises(ValueError, match="clipp"):
        write_standins(tmp_path, names=["clipp"])


FULL_SIZE_REPORT = """
import json
import torch
from clip_models import build_backbone
from clip_models.standins import write_standins

out = {}
for name, weights in write_standins(%r, full_size=True).items():
    backbone = build_backbone(name, weights)
    image = sum(p.numel() for p in backbone.image_encoder_parameters())
    with torch.no_grad():
        features = backbone.encode_image(torch.rand(1, 3, 224, 224))
    out[name] = {"params": sum(p.numel() for p in backbone.parameters()), "image_params": image,
                 "embed_dim": backbone.embed_dim, "ctx_dim": backbone.ctx_dim,
                 "context_length": backbone.context_length, "features": list(features.shape)}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_full_size_standins_have_the_real_models_sizes():
    with tempfile.TemporaryDirectory() as cache:  # 2.5 GB of weights: not left behind in pytest's tmp folders
        done = subprocess.run([sys.executable, "-c", FULL_SIZE_REPORT % cache], env=_offline_env(cache),
                              capture_output=True, text=True, timeout=900, check=True)
    sizes = json.loads(done.stdout.strip().splitlines()[-1])
    # OpenAI CLIP ViT-B/32 (open_clip and transformers count alike): 151,277,313 parameters, 87,849,216 in
    # the image tower and its projection.
    for name in ("clip", "quiltnet", "plip"):
        assert sizes[name]["params"] == 151_277_313
        assert sizes[name]["image_params"] == 87_849_216
        assert (sizes[name]["embed_dim"], sizes[name]["ctx_dim"], sizes[name]["context_length"]) == (512, 512, 77)
    # BiomedCLIP: ViT-B/16 (85.8 M without a classifier head, + a 768 -> 512 projection) and PubMedBERT-base.
    assert sizes["biomedclip"]["image_params"] == 85_798_656 + 768 * 512
    assert (sizes["biomedclip"]["embed_dim"], sizes["biomedclip"]["ctx_dim"],
            sizes["biomedclip"]["context_length"]) == (512, 768, 256)
    # MedCLIP: Swin-T (27.5 M without its head) + a bias-free 768 -> 512 projection; Bio_ClinicalBERT-base.
    assert sizes["medclip"]["image_params"] == 27_519_354 + 768 * 512
    assert (sizes["medclip"]["embed_dim"], sizes["medclip"]["ctx_dim"]) == (512, 768)
    assert all(size["features"] == [1, 512] for size in sizes.values())


def test_benchmark_runs_on_tiny_standins_and_reports_every_variant(tmp_path):
    out = tmp_path / "benchmark.json"
    subprocess.run([sys.executable, "-m", "benchmarks.run", "--tiny", "--backbones", "clip", "--device", "cpu",
                    "--repeats", "1", "--eval-images", "2", "--cache", str(tmp_path / "cache"), "--json", str(out)],
                   cwd=REPO, env=_offline_env(tmp_path / "unused"), capture_output=True, text=True, timeout=300,
                   check=True)
    report = json.loads(out.read_text())
    result = report["backbones"]["clip"]
    variants = result["variants"]
    assert set(variants) == {"CoOp", "CoOp, padded prompts", "BAPLe", "BAPLe, naive", "FineTune", "CoCoOp", "BadCLIP",
                             "eval", "eval, clean only", "eval, two passes", "eval, no workers"}
    assert all(len(v["seconds"]) == 1 and v["median_s"] > 0 for v in variants.values())
    assert result["poisoned_rows"] == 1 and result["batch_size"] == 16
    # CoOp trains 16 context vectors; BAPLe also the image-sized trigger noise.
    ctx = variants["CoOp"]["trainable_params"]
    assert ctx % 16 == 0 and variants["BAPLe"]["trainable_params"] == ctx + 3 * 224 * 224
    assert variants["FineTune"]["trainable_params"] > ctx
    cut = result["prompt_cut"]
    assert cut["cut_length"] < cut["padded_length"] == 77 and cut["max_abs_difference"] <= 1e-5
    assert set(result["ratios"]) >= {"BAPLe / CoOp", "BAPLe / FineTune", "BAPLe naive / BAPLe", "CoCoOp / CoOp",
                                     "BadCLIP / CoOp"}
    # CoCoOp: 4 context vectors and the meta-network; BadCLIP also its image-sized trigger.
    assert variants["BadCLIP"]["trainable_params"] == variants["CoCoOp"]["trainable_params"] + 3 * 224 * 224
