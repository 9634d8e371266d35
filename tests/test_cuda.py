"""The GPU path: training under each precision, GPU decoding, and GPU vs CPU agreement.

Every test here skips without a CUDA device (CI has none); they run on a lent GPU machine
through ``bench/gpu/run_device.sh``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnmt.checkpoint import Checkpoint, build_model
from attnmt.config import ModelConfig
from attnmt.search import beam_search, greedy_search
from attnmt.tokenizer import BOS_ID, EOS_ID, PAD_ID
from attnmt.train import train
from attnmt.translate import Translator
from tests.conftest import stepwise, tiny_pairs
from tests.test_train import overfit_cfg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_gpu_training_learns_and_its_checkpoint_translates_the_same_on_cpu(
    tmp_path: Path, arch: str, precision: str
) -> None:
    cfg = overfit_cfg(tmp_path, arch, "train.device=cuda", f"train.precision={precision}")
    run = train(cfg, log=lambda *_: None)
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert all(map(torch.isfinite, torch.tensor(losses)))  # fp16: the grad scaler kept it finite
    assert losses[-1] < 0.2 * losses[0]
    # Autocast computes in low precision but the weights (and the checkpoint) stay fp32 and are
    # saved as CPU tensors, so a GPU checkpoint loads on a machine without one.
    weights = Checkpoint.load(run / "last.pt").weights
    assert all(w.device.type == "cpu" for w in weights.values())
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())

    sources = [s for s, _ in tiny_pairs()[:6]]
    on_gpu = Translator.from_checkpoint(run / "last.pt", device="cuda")
    on_cpu = Translator.from_checkpoint(run / "last.pt", device="cpu")
    assert next(on_gpu.model.parameters()).is_cuda
    gpu_greedy = [h[0].text for h in on_gpu.with_options(beam=1).translate(sources)]
    assert gpu_greedy == [h[0].text for h in on_cpu.with_options(beam=1).translate(sources)]
    # Beam search with one beam is greedy search, on the GPU too.
    src, src_mask, _ = on_gpu.encode_sources(sources)
    greedy = greedy_search(on_gpu.model, src, src_mask, 1.5, 5)
    beam1 = beam_search(on_gpu.model, src, src_mask, 1, 1, 1.0, 1.5, 5)
    assert [c[0].ids for c in greedy] == [c[0].ids for c in beam1]
    assert all(len(h) == 2 for h in on_gpu.with_options(beam=4, n_best=2).translate(sources))


@torch.no_grad()
@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_teacher_forced_forward_equals_step_by_step_on_gpu(arch: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, emb_dim=32, hidden=32, heads=4, ff_dim=64, layers=2)
    model = build_model(cfg, 30, 30).cuda().eval()
    src = torch.tensor([[5, 6, 7, 8, 9, EOS_ID], [10, 11, 4, EOS_ID, PAD_ID, PAD_ID]]).cuda()
    mask = src != PAD_ID
    tgt_in = torch.tensor([[BOS_ID, 4, 5, 6, 7], [BOS_ID, 9, 10, 11, 12]]).cuda()
    forced = model(src, mask, tgt_in).log_softmax(-1)  # (B, T, V)
    steps, _, _ = stepwise(model, src, mask, tgt_in)
    # TF32 may be on for cuDNN; the tolerance covers its rounding, not a masking error.
    torch.testing.assert_close(steps, forced, atol=2e-3, rtol=0)
    # The same weights on the CPU give the same log-probs.
    cpu = model.cpu()
    on_cpu = cpu(src.cpu(), mask.cpu(), tgt_in.cpu()).log_softmax(-1)  # (B, T, V)
    torch.testing.assert_close(forced.cpu(), on_cpu, atol=2e-3, rtol=0)
