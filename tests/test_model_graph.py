"""The model as a graph of ``_target_`` parts, and checkpoints written before it ("House 4").

``data/house4/`` holds a checkpoint and the seeded initial weights made with main at caf9b0e,
the last commit before the graph (``data/house4/make_fixture.py`` says how).
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from helpers import CONFIGS, SHORT_TRAIN, compose_cfg
from meanflowse import checkpoint_contents as contents
from meanflowse.config import MODEL_PARTS, build_part, register_schemas
from meanflowse.inference.checkpoint import load_model, read_checkpoint
from meanflowse.legacy_config import migrate_config
from meanflowse.method.objective import LossOutput, cfm_loss
from meanflowse.method.objectives import OBJECTIVES, CFMObjective, MeanFlowObjective
from meanflowse.training.checkpointing import ResumeError, config_differences, stored_config
from meanflowse.training.fit import build_module, train

FIXTURE = Path(__file__).parent / "data" / "house4"
# the overrides the fixture was trained with (make_fixture.py)
OVERRIDES = [
    *SHORT_TRAIN,
    "mf.weight_final=0.5",
    "curriculum.mf_warmup_frac=0.0",
    "callbacks.val_metrics.every_n_epochs=1",
]
CFM = [*(o for o in OVERRIDES if not o.startswith("mf.")), "mf_objective=cfm"]  # CFM has no weight


def test_a_seeded_build_gives_the_weights_of_the_build_before_the_graph(tmp_path):
    cfg = compose_cfg("train", OVERRIDES, tmp_path)
    L.seed_everything(0, workers=True)
    new = build_module(cfg).state_dict()
    old = torch.load(FIXTURE / "initial_state.pt", weights_only=True)
    assert new.keys() == old.keys()
    assert all(torch.equal(new[k], old[k]) for k in old)


def test_build_module_instantiates_each_part_from_its_target(tmp_path):
    cfg = compose_cfg("train", CFM, tmp_path)
    module = build_module(cfg)
    for arg, key in MODEL_PARTS.items():
        part = getattr(module, {"sampler": "sampler_cfg"}.get(arg, arg))
        assert f"{type(part).__module__}.{type(part).__qualname__}" == cfg[key]._target_
    assert isinstance(module.objective, CFMObjective) and not module.trained_with_meanflow


def test_migrate_config_maps_an_old_config_to_the_graph():
    old = torch.load(FIXTURE / "last.ckpt", weights_only=True)["hyper_parameters"]["config"]
    assert "_target_" not in old["mf"] and "_target_" not in old["path"]
    cfm_run = {**old, "mf": {k: v for k, v in old["mf"].items() if k != "parametrization"}}
    cfm_run["mf"]["weight_final"] = 0.0  # CFM before the graph: the MeanFlow objective at w = 0
    migrated = migrate_config(cfm_run)
    objective = build_part(migrated, "mf")
    assert type(objective) is MeanFlowObjective and not objective.learns_average_velocity
    assert migrated.mf.parametrization == "velocity"  # a key added later: its default
    assert migrated.path._target_ == "meanflowse.method.path.PathConfig"
    assert OmegaConf.to_container(migrate_config(migrated)) == OmegaConf.to_container(migrated)


def test_a_checkpoint_from_before_the_graph_evaluates_with_its_ema_weights(tmp_path):
    model, cfg = load_model(FIXTURE / "last.ckpt")
    shadow = contents.ema_state_of(read_checkpoint(FIXTURE / "last.ckpt"))["shadow"]
    params = dict(model.named_parameters())
    # the shadow holds the trained parameters (not the fixed Fourier features)
    assert shadow and shadow.keys() <= params.keys()
    assert all(torch.equal(params[k], shadow[k]) for k in shadow)
    assert model.trained_with_meanflow and cfg.mf._target_.endswith("MeanFlowObjective")

    from meanflowse import load_enhancer

    wav = torch.randn(1, 12000, generator=torch.Generator().manual_seed(0)) * 0.1
    out = load_enhancer(FIXTURE / "last.ckpt").enhance(wav, sample_rate=16000)
    assert out.shape == wav.shape and torch.isfinite(out).all() and not torch.equal(out, wav)


def test_a_checkpoint_from_before_the_graph_resumes(tmp_path):
    run = tmp_path / "old_run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(FIXTURE / "last.ckpt", run / "checkpoints" / "last.ckpt")
    cfg = compose_cfg("train", OVERRIDES, tmp_path / "new_run")
    assert config_differences(stored_config(run / "checkpoints" / "last.ckpt"), cfg) == []

    resumed = compose_cfg("train", [*OVERRIDES, "trainer.max_steps=4", f"ckpt_path={run}"], tmp_path / "new")
    metrics, objects = train(resumed)
    assert objects["trainer"].global_step == 4
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 4 and contents.ema_state_of(last)["num_updates"] == 4
    assert contents.config_of(last)["mf"]["_target_"].endswith("MeanFlowObjective")

    # the same-model check works on the graph's keys: another objective class is refused
    other = compose_cfg("train", [*CFM, f"ckpt_path={run}"], tmp_path / "x")
    with pytest.raises(ResumeError, match="mf._target_"):
        train(other)


def test_a_cfm_run_from_before_the_graph_resumes_under_mf_objective_cfm(tmp_path):
    """Before the CFM class, mf_objective=cfm was MeanFlow at weight_final 0: the same model and
    objective, so resume's same-model check accepts it under today's mf_objective=cfm (and not
    a MeanFlow config with spans)."""
    old = torch.load(FIXTURE / "last.ckpt", weights_only=True)["hyper_parameters"]["config"]
    old_cfm = migrate_config({**old, "mf": {**old["mf"], "weight_final": 0.0}})
    assert config_differences(old_cfm, compose_cfg("train", CFM, tmp_path)) == []
    assert "mf._target_" in " ".join(config_differences(old_cfm, compose_cfg("train", OVERRIDES, tmp_path)))


def test_every_declared_part_is_where_the_contents_module_says():
    ckpt = read_checkpoint(FIXTURE / "last.ckpt")
    assert all(contents.present(ckpt).values()), contents.present(ckpt)
    assert contents.validation_state_of(ckpt)["last"]  # validation ran once
    from meanflowse.training.ema import EMA
    from meanflowse.training.validation import ValidationMetrics

    assert EMA().state_key == contents.EMA_KEY
    assert ValidationMetrics().state_key == contents.VALIDATION_KEY
    minimal = contents.inference_checkpoint({"a": 1}, {"w": torch.zeros(1)})
    assert contents.present(minimal) == {
        "config": True,
        "weights": True,
        "ema": False,
        "validation": False,
        "loader_position": False,
        "schedule": False,
    }


@dataclass
class ScaledCFM(CFMObjective):
    """A new objective, as a user would add one: its settings and its one method."""

    scale: float = 2.0

    def __call__(self, net_fn, batch, curriculum):
        loss = self.scale * cfm_loss(net_fn, x_t=batch.x_t, y=batch.y, t=batch.t, v=batch.v, cfg=self)
        return LossOutput(loss, {"scaled_by": self.scale})


def test_a_new_objective_is_one_class_and_one_yaml(tmp_path, monkeypatch):
    """The class (listed in OBJECTIVES) and configs/mf_objective/<name>.yaml: nothing else."""
    monkeypatch.setitem(OBJECTIVES, "scaled", ScaledCFM)
    register_schemas()
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    (configs / "mf_objective" / "scaled.yaml").write_text(
        "# @package mf\n"
        "defaults:\n  - /schema/objective/scaled@_here_\n  - _self_\n"
        f"_target_: {ScaledCFM.__module__}.ScaledCFM\n"
        "scale: 3.0\n"
    )
    overrides = [*SHORT_TRAIN, "mf_objective=scaled"]
    cfg = compose_cfg("train", overrides, tmp_path / "run", config_dir=configs)
    metrics, objects = train(cfg)
    assert type(objects["module"].objective) is ScaledCFM and metrics["train/scaled_by"] == 3.0
    assert not objects["module"].trained_with_meanflow  # so sampler=auto gave euler
    with pytest.raises(Exception, match="scale"):  # its keys are typed like any objective's
        compose_cfg("train", [*overrides, "mf.scale=abc"], tmp_path / "typo", config_dir=configs)
