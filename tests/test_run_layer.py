"""One run layer under every harness: the loops outside the segmentation engine (3D video, Mask R-CNN,
the mechanism studies) build model, loss and optimiser from the same settings as the engine, so a setting
(OHEM, the category consistent loss, the head LR) is honoured everywhere or refused in one line."""

from __future__ import annotations

import dataclasses

import pytest
from test_run_safety import one_thread  # noqa: F401  (an autouse fixture)

from cca.engine import runlog
from cca.engine.config import apply_overrides


def _tiny_table9_3d(tmp_path, *overrides):
    from experiments.table09_camvid import SMOKE

    cfg = dataclasses.replace(SMOKE, model="ccnet3d", clip_length=3)
    return apply_overrides(
        cfg,
        [f"data_root={tmp_path / 'camvid'}", f"output_dir={tmp_path / 'run'}", "synthetic_size=24,32",
         "synthetic_num_train=4", "synthetic_num_val=1", "crop_size=24,24", "batch_size=2", "iterations=2",
         "checkpoint_every=1", "log_every=1", *overrides],
    )


def test_table9_3d_row_trains_with_ohem_and_the_ccl(tmp_path, monkeypatch):
    """Table 9's 3D loop with ``ohem=true`` and a CCL weight: OHEM scores the main term and the CCL term is
    in every logged loss (the loop used to build a plain criterion and drop both without a word)."""
    from cca import losses
    from experiments import video

    calls = []
    forward = losses.OhemCrossEntropy.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(losses.OhemCrossEntropy, "forward", counted)
    cfg = _tiny_table9_3d(tmp_path, "ohem=true", "ohem_min_kept=10", "ccl_weight=1.0", "ccl_channels=4")
    metrics = video.train_3d(cfg)
    assert 0.0 <= metrics["miou"] <= 1.0
    assert len(calls) == cfg.iterations  # one OHEM main term per step
    rows = [r for r in runlog.read_jsonl(cfg.run_dir / "metrics.jsonl") if r["type"] == "train"]
    assert [r["iter"] for r in rows] == [1, 2]
    for row in rows:
        assert row["ccl"] > 0.0  # the CCL on the projected centre-frame features
        assert row["loss"] == pytest.approx(row["main"] + cfg.aux_weight * row["aux"] + cfg.ccl_weight * row["ccl"],
                                            rel=1e-5)


def test_table9_3d_row_without_ohem_or_ccl_leaves_them_out(tmp_path, monkeypatch):
    from cca import losses
    from experiments import video

    monkeypatch.setattr(losses.OhemCrossEntropy, "forward", lambda *a, **k: pytest.fail("OHEM used with ohem=false"))
    cfg = _tiny_table9_3d(tmp_path)
    video.train_3d(cfg)
    rows = [r for r in runlog.read_jsonl(cfg.run_dir / "metrics.jsonl") if r["type"] == "train"]
    assert rows and all(r["ccl"] == 0.0 for r in rows)


# ------------------------------------------------------------------------------ one settings contract
def test_settings_that_are_not_a_training_run_are_small_dataclasses_of_their_own():
    """Table 5's profiling settings: no engine fields they would ignore; the engine's one parser names
    an unknown key with the valid ones and a bad (H, W) with what it takes."""
    from cca.engine.config import ExperimentConfig
    from cca.engine.parsing import apply_overrides
    from experiments.table05_efficiency import SMOKE, EfficiencySettings

    assert not isinstance(SMOKE, ExperimentConfig)
    assert [f.name for f in dataclasses.fields(EfficiencySettings)] == [
        "block", "count", "recurrence", "backbone", "batch_size", "crop_size", "step", "device"]
    assert apply_overrides(SMOKE, ["crop_size=97", "step=inference"]).crop_size == (97, 97)
    with pytest.raises(ValueError, match="unknown setting 'lr'; valid settings: block, count, recurrence"):
        apply_overrides(SMOKE, ["lr=0.1"])
    with pytest.raises(TypeError, match="'crop_size' expects H,W"):
        apply_overrides(SMOKE, ["crop_size=1,2,3"])
    for bad in ("count=0", "crop_size=0,5", "step=both", "device=tpu"):
        with pytest.raises(ValueError, match=repr(bad.split("=")[0])):
            apply_overrides(SMOKE, [bad])


def test_the_size_fields_are_named_once_by_their_type():
    from cca.engine.config import ExperimentConfig, VideoConfig
    from cca.engine.parsing import size_fields
    from experiments.table05_efficiency import EfficiencySettings

    assert size_fields(ExperimentConfig) == ("synthetic_size", "crop_size", "eval_crop", "eval_stride")
    assert size_fields(VideoConfig) == size_fields(ExperimentConfig)
    assert size_fields(EfficiencySettings) == ("crop_size",)
    with pytest.raises(TypeError, match="'eval_stride' expects H,W"):
        apply_overrides(ExperimentConfig(), ["eval_stride=a,b"])
    with pytest.raises(ValueError, match="'eval_crop' must be positive"):
        apply_overrides(ExperimentConfig(), ["eval_crop=0,4"])


# Result hashes name the rows' results on disk; these were computed before the profiling settings became
# a dataclass of their own and must not drift (every table's rows were compared when the change was made).
PINNED_TABLE5_HASHES = [
    ("smoke", "rcca_r2", "9b6b879780f7f3c3"),
    ("full", "rcca_r2", "3913aebc79118ae3"),
    ("full", "nonlocal_x2_batch2", "a098f14b2f291dbd"),
    ("smoke", "baseline", "cf977db11724de1e"),
]


@pytest.mark.parametrize("scale, key, expected", PINNED_TABLE5_HASHES)
def test_table5_result_hashes_do_not_change(scale, key, expected):
    from experiments.settings import row_settings, settings_hash
    from experiments.spec import Options
    from experiments.table05_efficiency import TABLE

    row = next(r for r in TABLE.rows if r.key == key)
    assert settings_hash(TABLE, row, row_settings(TABLE, row, Options(scale=scale))) == expected


# ------------------------------------------------------------------------------ one result cache rule
def test_a_result_key_is_the_settings_with_the_producers_declared_code_version():
    from experiments.cache import code_version, is_current, produces, result_key

    def make(version):
        @produces(version=version)
        def producer():
            return None

        return producer

    identity = {"settings": {"lr": 0.1}, "seed": 0}
    v1, v2 = make(1), make(2)
    assert code_version(v2) == 2 and result_key(identity, v1) != result_key(identity, v2)
    assert result_key(identity, v1) == result_key(dict(reversed(identity.items())), make(1))
    with pytest.raises(TypeError, match="declares no code version"):
        result_key(identity, lambda: None)
    with pytest.raises(ValueError, match="version must be an integer >= 1"):
        produces(version=0)
    key = result_key(identity, v1)
    assert is_current({"settings_hash": key, "commit": "anything"}, key, v1)  # the commit is not compared
    assert not is_current({"settings_hash": "other"}, key, v1) and not is_current(None, key, v1)
    # a record written before the rule (no code_version) is read back under its settings-only key at version 1
    assert is_current({"settings_hash": "old", "commit": "abc"}, key, v1, legacy_key="old")
    assert not is_current({"settings_hash": "old", "commit": "abc"}, key, v2, legacy_key="old")
    assert not is_current({"settings_hash": "old", "code_version": 1}, key, v1, legacy_key="old")


def test_a_table_row_written_before_the_rule_is_read_back_and_a_new_commit_reruns_nothing(tmp_path, monkeypatch):
    import json

    from experiments import rows
    from experiments.cache import produces
    from experiments.settings import row_key, row_settings, run_dir, settings_hash
    from experiments.spec import Options, Row, Table
    from experiments.table05_efficiency import SMOKE

    calls = []

    @produces(version=1)
    def runner(table, row, settings, options, directory):
        calls.append(row.key)
        return {"gflops": 1.0}

    table = Table(number=98, topic="demo", title="demo", metrics=("gflops",), rows=(Row("a", "A"),), full=SMOKE,
                  smoke=SMOKE, kind="profile", runner=runner, shows_full="-", shows_smoke="-")
    options = Options(runs_dir=tmp_path / "runs", reports_dir=tmp_path / "reports")
    row = table.rows[0]
    settings = row_settings(table, row, options)
    directory = run_dir(table, row, options)
    directory.mkdir(parents=True)
    old = {"table": 98, "row": "a", "scale": "smoke", "metrics": {"gflops": 7.0}, "commit": "0ld",
           "settings_hash": settings_hash(table, row, settings)}
    (directory / "result.json").write_text(json.dumps(old))
    assert rows.run_row(table, row, options)["metrics"] == {"gflops": 7.0} and calls == []
    record = rows.run_row(table, row, Options(**{**options.__dict__, "force": True}))
    assert calls == ["a"] and record["settings_hash"] == row_key(table, row, settings) and record["code_version"] == 1
    import cca.provenance

    monkeypatch.setattr(cca.provenance, "git_commit", lambda: "another commit")
    assert rows.run_row(table, row, options)["metrics"] == {"gflops": 1.0} and calls == ["a"]
