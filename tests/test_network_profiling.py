"""The paper's efficiency methodology: increments of the whole segmentation network (cca.profiling.network)."""

from __future__ import annotations

import json

import pytest
import torch

from cca.profiling import build_block, count_flops, peak_memory
from cca.profiling.__main__ import NETWORK_JSON_KEYS
from cca.profiling.__main__ import main as profile_main
from cca.profiling.network import build_network, measure_network, network_increment
from cca.profiling.variants import NONLOCAL_VARIANTS, build_variant

TINY = "resnet18_tiny"  # 128 channels at res5: the head's mid is 32
SHAPE = (1, 3, 64, 64)  # output stride 8: an 8 x 8 feature map


@pytest.mark.parametrize("block, recurrence, count", [("rcca", 2, 1), ("nonlocal", 2, 2), ("rcca", 3, 1)])
def test_increment_is_the_difference_of_two_measured_networks(block, recurrence, count):
    result = network_increment(block, recurrence, backbone=TINY, input_shape=SHAPE, count=count, memory_method="fake")
    with_block = measure_network(lambda: build_network(TINY, block, recurrence, count), SHAPE, memory_method="fake")
    baseline = measure_network(lambda: build_network(TINY), SHAPE, memory_method="fake")
    assert result["flops_increment"] == with_block["flops"] - baseline["flops"]
    assert result["memory_increment_bytes"] == with_block["memory_bytes"] - baseline["memory_bytes"]
    assert result["memory_increment_mb"] == pytest.approx(result["memory_increment_bytes"] / 1e6)
    assert result["memory_increment_mib"] == pytest.approx(result["memory_increment_bytes"] / 2**20)
    assert result["baseline_gflops"] == pytest.approx(baseline["gflops"])
    assert result["memory_increment_bytes"] > 0 and result["flops_increment"] > 0


@pytest.mark.parametrize("block, recurrence", [("rcca", 1), ("rcca", 2), ("nonlocal", 2), ("psp", 2), ("aspp", 2)])
def test_flops_increment_equals_the_block_alone(block, recurrence):
    """The baseline head has the identity where the block goes: the increment is exactly the block's count
    on the head's (N, mid, H/8, W/8) feature map."""
    result = network_increment(block, recurrence, backbone=TINY, input_shape=SHAPE, memory_method="fake")
    alone = count_flops(build_block(block, 32, recurrence), torch.empty(1, 32, 8, 8, device="meta"))
    assert result["flops_increment"] == alone["flops"]


def test_two_blocks_in_sequence_double_the_flops():
    one = network_increment("nonlocal", backbone=TINY, input_shape=SHAPE, memory_method="fake")
    two = network_increment("nonlocal", backbone=TINY, input_shape=SHAPE, count=2, memory_method="fake")
    assert two["flops_increment"] == 2 * one["flops_increment"]
    assert two["memory_increment_bytes"] > one["memory_increment_bytes"]


def test_network_memory_matches_a_real_cpu_run():
    """The fake-tensor run of the whole network equals a real CPU run under the same tracker."""
    fake = peak_memory(build_network(TINY, "rcca", 2), SHAPE, method="fake")
    live = peak_memory(build_network(TINY, "rcca", 2), SHAPE, method="live")
    assert fake["peak_memory_bytes"] == live["peak_memory_bytes"]


def test_inference_step_holds_less_than_training():
    training = network_increment("nonlocal", backbone=TINY, input_shape=SHAPE, memory_method="fake")
    baseline = measure_network(lambda: build_network(TINY), SHAPE, step="inference", memory_method="fake")
    inference = network_increment(
        "nonlocal", backbone=TINY, input_shape=SHAPE, step="inference", memory_method="fake", baseline=baseline
    )
    assert inference["step"] == "inference" and inference["baseline_memory_mib"] < training["baseline_memory_mib"]
    assert inference["flops_increment"] == training["flops_increment"]


@pytest.mark.parametrize("name", sorted(NONLOCAL_VARIANTS))
def test_nonlocal_variants_keep_the_shape_and_have_gradients(name):
    block = build_variant(name, 16)
    x = torch.randn(2, 16, 6, 8, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_variant_flops_follow_their_inner_products():
    """Subsampling phi and g by 2x2 quarters the two (HW)^2 products; no reduction doubles g's."""
    shape = torch.empty(1, 16, 8, 8, device="meta")
    full = count_flops(build_variant("nl_2018_matmul", 16), shape)["by_operator"]
    sub = count_flops(build_variant("nl_subsampled", 16), shape)["by_operator"]
    products = {k: v for k, v in full.items() if k != "conv"}
    assert sum(products.values()) == 2 * (8 * 8) ** 2 * 8  # two products of (HW) x (HW) x C/2
    assert sum(v for k, v in sub.items() if k != "conv") * 4 == sum(products.values())


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="input_shape"):
        network_increment("rcca", backbone=TINY, input_shape=(1, 4, 64, 64))
    with pytest.raises(ValueError, match="count"):
        build_network(TINY, "rcca", count=0)
    with pytest.raises(ValueError, match="unknown network"):
        build_network("vgg16")
    with pytest.raises(ValueError, match="unknown non-local variant"):
        build_variant("nl_1999", 16)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU"):
            network_increment("rcca", backbone=TINY, input_shape=SHAPE, device="cuda")


def test_cli_network_json(capsys):
    argv = ["--network", TINY, "rcca", "--recurrence", "2", "--input", "1,3,64,64", "--json"]
    assert profile_main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(NETWORK_JSON_KEYS) <= set(result)
    expected = network_increment("rcca", 2, backbone=TINY, input_shape=SHAPE)
    assert result["gflops_increment"] == pytest.approx(expected["gflops_increment"])
    assert result["memory_increment_mb"] == pytest.approx(expected["memory_increment_mb"])
    assert result["memory_method"] == "fake_tensor_tracker(cuda-equivalent)" and result["step"] == "training"
    with pytest.raises(SystemExit):
        profile_main(["--network", TINY, "rcca", "--input", "1,512,8,8"])
    assert "N,3,H,W" in capsys.readouterr().err
