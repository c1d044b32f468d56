"""Settings: presets, type-checked ``key=value`` overrides, JSON round trip, the CLI's handling of them."""

from __future__ import annotations

import json

import pytest

from cca.__main__ import COMMANDS, main
from cca.engine.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    field_names,
    load_config,
    save_config,
)
from cca.engine.presets import PRESETS, get_config


def test_presets_exist_and_are_valid():
    assert {"smoke", "ccnet_r101-d8_4xb2-60k_cityscapes-769x769"} <= set(PRESETS)
    for name, cfg in PRESETS.items():
        assert cfg.name == name
        assert get_config(name) == cfg


def test_preset_names_tell_the_setup():
    """mmseg style: <model>_<backbone>-d8_<gpus>xb<batch per gpu>-<k iterations>_<dataset>-<crop>."""
    import re

    for name, cfg in PRESETS.items():
        if name == "smoke":
            continue
        match = re.fullmatch(r"([a-z0-9-]+)_r(\d+)-(d8|fpn)_(\d+)xb(\d+)-(\d+)k_([a-z0-9]+)(-(\d+)x(\d+))?", name)
        assert match, name
        assert cfg.backbone == f"resnet{match.group(2)}"
        assert int(match.group(4)) * int(match.group(5)) == cfg.batch_size
        assert int(match.group(6)) * 1000 == cfg.iterations and cfg.dataset == match.group(7)
        if match.group(8):
            assert cfg.crop_size == (int(match.group(9)), int(match.group(10)))
        assert ("-ccl" in name) == (cfg.ccl_weight > 0)


def test_smoke_preset_is_tiny_cpu_synthetic():
    cfg = get_config("smoke")
    assert cfg.backbone == "resnet18_tiny" and cfg.device == "cpu" and cfg.synthetic
    assert cfg.dataset == "cityscapes" and cfg.crop_size == (64, 64) and cfg.iterations <= 30


def test_cityscapes_preset_is_the_papers_setting():
    """DESIGN.md: R-101, crop 769, batch 8, 60k iterations, lr 0.01, wd 1e-4, poly 0.9, R=2, aux 0.4, sliding eval."""
    cfg = get_config("ccnet_r101-d8_4xb2-60k_cityscapes-769x769")
    assert (cfg.model, cfg.backbone, cfg.recurrence) == ("ccnet", "resnet101", 2)
    assert (cfg.dataset, cfg.crop_size, cfg.batch_size, cfg.iterations) == ("cityscapes", (769, 769), 8, 60000)
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.poly_power) == (0.01, 0.9, 1e-4, 0.9)
    assert cfg.aux_weight == 0.4 and cfg.eval_mode == "slide" and cfg.eval_scales == (1.0,) and not cfg.eval_flip


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="smoke") as info:
        get_config("cityscapes_r102")
    assert "ccnet_r101-d8_4xb2-60k_cityscapes-769x769" in str(info.value)


def test_overrides_are_parsed_by_field_type():
    cfg = apply_overrides(
        get_config("smoke"),
        [
            "iterations=7",
            "lr=2e-3",
            "eval_flip=yes",
            "deterministic=false",
            "crop_size=48",  # one value for an (H, W) pair: square
            "synthetic_size=(32, 64)",
            "eval_scales=0.75,1,1.25",
            "pretrained=none",
            "eval_crop=16,24",
            "amp=bf16",
        ],
    )
    assert cfg.iterations == 7 and isinstance(cfg.iterations, int)
    assert cfg.lr == 2e-3 and cfg.eval_flip is True and cfg.deterministic is False
    assert cfg.crop_size == (48, 48) and cfg.synthetic_size == (32, 64)
    assert cfg.eval_scales == (0.75, 1.0, 1.25) and all(isinstance(s, float) for s in cfg.eval_scales)
    assert cfg.pretrained is None and cfg.eval_crop == (16, 24) and cfg.amp == "bf16"
    assert get_config("smoke").iterations != 7  # presets are not modified


def test_unknown_key_is_an_error_listing_valid_keys():
    with pytest.raises(ValueError, match="unknown setting 'iteration'") as info:
        apply_overrides(get_config("smoke"), ["iteration=5"])
    for name in field_names():
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("iterations=abc", "expects int"),
        ("iterations=1.5", "expects int"),
        ("lr=fast", "expects float"),
        ("eval_flip=maybe", "expects bool"),
        ("crop_size=1,2,3", "2 comma-separated values"),
        ("crop_size=12x12", "expects H,W"),
        ("eval_scales=", "expects tuple"),
    ],
)
def test_bad_value_types_are_rejected(item, expected):
    with pytest.raises(TypeError, match=expected) as info:
        apply_overrides(get_config("smoke"), [item])
    assert item.split("=")[0] in str(info.value)


@pytest.mark.parametrize(
    ("item", "key"),
    [
        ("amp=fp8", "amp"),
        ("iterations=0", "iterations"),
        ("eval_mode=tiles", "eval_mode"),
        ("device=tpu", "device"),
        ("crop_size=0,32", "crop_size"),
        ("warmup_ratio=0", "warmup_ratio"),
        # once accepted, then a crash much later; now rejected at parse with the valid range
        ("eval_scales=inf", "eval_scales"),
        ("eval_scales=1,nan", "eval_scales"),
        ("scale_range=1,inf", "scale_range"),
        ("seed=-1", "seed"),
        ("seed=99999999999999999999", "seed"),
    ],
)
def test_bad_values_are_rejected(item, key):
    with pytest.raises(ValueError, match=key):
        apply_overrides(get_config("smoke"), [item])


def test_range_errors_state_the_valid_range():
    with pytest.raises(ValueError, match=r"'seed' must be an integer in \[0, 4294967295\]"):
        apply_overrides(get_config("smoke"), ["seed=-1"])
    with pytest.raises(ValueError, match="finite positive scales"):
        apply_overrides(get_config("smoke"), ["eval_scales=inf"])


def test_config_file_must_hold_an_object(tmp_path, capsys):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(TypeError, match="list.json must hold a JSON object"):
        load_config(path)
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", str(path)])
    assert info.value.code == 2 and "must hold a JSON object" in capsys.readouterr().err


def test_malformed_override_is_rejected():
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(get_config("smoke"), ["iterations"])


def test_constructor_checks_types():
    with pytest.raises(TypeError, match="'batch_size' expects int"):
        ExperimentConfig(batch_size="8")
    with pytest.raises(TypeError, match="'deterministic' expects bool"):
        ExperimentConfig(deterministic=1)
    assert ExperimentConfig(lr=1).lr == 1.0 and isinstance(ExperimentConfig(lr=1).lr, float)
    assert ExperimentConfig(crop_size=[5, 6]).crop_size == (5, 6)


def test_json_round_trip(tmp_path):
    cfg = apply_overrides(get_config("ccnet_r101-d8_4xb2-60k_cityscapes-769x769"), ["eval_scales=0.5,1.0,1.75", "eval_crop=none"])
    path = save_config(cfg, tmp_path / "config.json", provenance={"command": "pytest"})
    data = json.loads(path.read_text())
    assert data["_provenance"] == {"command": "pytest"} and data["crop_size"] == [769, 769]
    assert load_config(path) == cfg
    assert get_config(str(path)) == cfg
    with pytest.raises(ValueError, match="unknown setting"):
        config_from_dict({**cfg.to_dict(), "learning_rate": 0.1})
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_config(tmp_path / "missing.json")


def test_run_dir_defaults_to_runs_name(tmp_path):
    assert str(get_config("smoke").run_dir) == "runs/smoke"
    assert apply_overrides(get_config("smoke"), [f"output_dir={tmp_path}"]).run_dir == tmp_path


# --- the command line -----------------------------------------------------------------------


def test_cli_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert {"train", "evaluate"} <= set(COMMANDS)
    for name in COMMANDS:
        assert name in out


def test_cli_print_config_applies_overrides(capsys, tmp_path):
    assert (
        main(
            ["train", "--config", "smoke", "--set", "iterations=3", "lr=0.5", "--out", str(tmp_path), "--print-config"]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["iterations"] == 3 and data["lr"] == 0.5 and data["output_dir"] == str(tmp_path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--config", "smoke", "--set", "bogus=1"], "valid settings: name, model"),
        (["train", "--config", "smoke", "--set", "iterations=many"], "'iterations' expects int"),
        (["train", "--config", "nope"], "config must be one of"),
        (["evaluate", "--checkpoint", "x.pt", "--set", "bogus=1"], "unknown setting 'bogus'"),
    ],
)
def test_cli_rejects_bad_settings(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


# --- settings that used to pass the parser and fail at train time -------------------------------


@pytest.mark.parametrize(
    ("items", "key", "expected"),
    [
        (["model=unet"], "model", r"one of \('ccnet', 'fcn'.*\), got 'unet'"),
        (["backbone=vgg"], "backbone", r"one of \('resnet50', 'resnet101'.*\), got 'vgg'"),
        (["dataset=imagenet"], "dataset", r"one of \('cityscapes', 'ade20k'.*\), got 'imagenet'"),
        (["batch_size=3", "grad_accum=2"], "batch_size", r"divisible by grad_accum=2 \(.*\), got 3"),
        (["warmup_iters=50", "iterations=3"], "warmup_iters", "<= iterations=3, got 50"),
        (["synthetic_size=8,8"], "synthetic_size", r"at least 16.*, got \(8, 8\)"),
        (["lr=inf"], "lr", "finite and > 0, got inf"),
        (["lr=nan"], "lr", "finite and > 0, got nan"),
        (["momentum=inf"], "momentum", r"in \[0, 1\), got inf"),
        (["momentum=1"], "momentum", r"in \[0, 1\), got 1.0"),
        (["weight_decay=1e400"], "weight_decay", "finite and >= 0, got inf"),
        (["name=../../x"], "name", "a single directory name .*, got '../../x'"),
        (["name=a/b"], "name", "a single directory name .*, got 'a/b'"),
        (["name=.."], "name", "a single directory name .*, got '..'"),
    ],
)
def test_settings_are_checked_at_parse_in_one_line(capsys, items, key, expected):
    """Each names the setting, its value and what it takes; `--print-config` refuses them (exit 2, one line)."""
    with pytest.raises(ValueError, match=f"setting '{key}' must be {expected}") as info:
        apply_overrides(get_config("smoke"), items)
    assert "\n" not in str(info.value)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", "smoke", "--set", *items, "--print-config"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"setting '{key}' must be" in err[-1] and "Traceback" not in "".join(err)


def test_detection_and_presets_keep_their_own_model_and_backbone_names():
    coco = get_config("mask-rcnn-rcca_r50-fpn_8xb2-90k_coco")
    assert apply_overrides(coco, ["backbone=resnet18"]).backbone == "resnet18"  # a Mask R-CNN backbone
    with pytest.raises(ValueError, match="setting 'backbone' must be one of"):
        apply_overrides(coco, ["backbone=resnet18_tiny"])
    with pytest.raises(ValueError, match="setting 'model' must be one of"):
        apply_overrides(coco, ["model=ccnet"])
    assert apply_overrides(get_config("smoke"), ["grad_accum=2", "warmup_iters=20", "name=a.b-c_d"]).grad_accum == 2


def test_get_config_without_a_name_is_a_type_error():
    with pytest.raises(TypeError, match="config must be a preset name or a path to a config.json, got NoneType None"):
        get_config(None)
