"""CUDA runs with mixed precision (skipped without a GPU, so never in CI)."""
import json
import math
import os

import pytest
import torch

from helpers_runs import run_cfg, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("prec", ["amp_bf16", "amp", "fp16"])
@pytest.mark.parametrize("trainer, attack", [("BAPLe", "none"), ("CoOp", "wanet"), ("FineTune", "fiba")])
def test_trains_on_cuda_in_each_precision(standins, synthetic_root, tmp_path, trainer, attack, prec):
    cfg = run_cfg(trainer, synthetic_root, tmp_path, standins["biomedclip"],
                  **{"USE_CUDA": True, "TRAINER.PREC": prec, "BACKDOOR.ATTACK": attack, "BACKDOOR.POISON_COUNT": 2})
    result = train(cfg)
    assert next(result.model.parameters()).device.type == "cuda"
    with open(os.path.join(tmp_path, "results.json")) as f:
        results = json.load(f)
    assert math.isfinite(results["clean"]["accuracy"]) and results["backdoor"] is not None
    if trainer == "BAPLe":
        assert result.trigger.noise.delta.abs().max().item() <= cfg.BACKDOOR.NOISE_EPS / 255 + 1e-6
