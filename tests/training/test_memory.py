"""vist2 loss-memory: the meta-device tally matches real tensors; the chunked loss halves the peak."""

import pytest
import torch

from vist2.cli import main
from vist2.presets import preset_config
from vist2.training.memory import measure_cpu, olm_batch


def test_meta_tally_equals_real_tensors():
    config = preset_config("tiny")
    batch = olm_batch(config, slots=300, micro_batch=2)
    for impl in ("plain", "chunked"):
        meta = measure_cpu(config, batch, impl, gradient_checkpointing=True)
        real = measure_cpu(config, batch, impl, gradient_checkpointing=True, real=True)
        assert meta == real, impl
        assert meta[0] > meta[1]["Parameter"] > 0


def test_chunked_loss_at_least_halves_the_olm_peak_with_a_large_vocabulary():
    # a narrow LLM with Qwen3's vocabulary, so the logits dominate as they do at 0.6B and 8k slots
    config = preset_config("tiny")
    config.text_config.vocab_size = 151936
    batch = olm_batch(config, slots=2048, micro_batch=1)
    plain, _ = measure_cpu(config, batch, "plain", gradient_checkpointing=True)
    chunked, _ = measure_cpu(config, batch, "chunked", gradient_checkpointing=True)
    assert chunked <= plain / 2, (chunked, plain)


def test_cli_prints_both_and_writes_json(tmp_path, capsys):
    out = tmp_path / "memory.json"
    code = main(["loss-memory", "--preset", "tiny", "--slots", "200", "--device", "cpu",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "plain: peak" in printed and "chunked: peak" in printed and "meta" in printed
    assert out.is_file()


def test_cli_rejects_an_unknown_impl(capsys):
    assert main(["loss-memory", "--preset", "tiny", "--impl", "magic", "--device", "cpu"]) == 2
    assert "vist2: error: --impl" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    assert main(["loss-memory", "--preset", "tiny", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
