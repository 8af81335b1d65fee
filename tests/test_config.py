"""Every option of every config group composes and instantiates; typos fail naming the key."""

import functools
import subprocess
import sys

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from helpers import CONFIGS, ROOT, TINY, compose_cfg
from meanflowse.config import MODEL_PARTS, build_part, dotted_leaves
from meanflowse.method.objectives import OBJECTIVES
from meanflowse.training.fit import flat_config


def options(group):
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def test_dotted_leaves_name_every_leaf_by_its_path_and_keep_empty_nodes_and_lists():
    nested = {"mf": {"first_order_coef": 0.5, "jvp": {"eps": 1e-3}}, "tags": [1, 2], "extra": {}}
    assert dotted_leaves(nested) == {
        "mf.first_order_coef": 0.5,
        "mf.jvp.eps": 1e-3,
        "tags": [1, 2],
        "extra": {},
    }
    assert dotted_leaves(nested["mf"], "mf") == {"mf.first_order_coef": 0.5, "mf.jvp.eps": 1e-3}
    assert dotted_leaves(3, "seed") == {"seed": 3}


@pytest.mark.parametrize("key", sorted(set(MODEL_PARTS.values()) - {"backbone"}))
def test_model_part_groups_build_the_class_their_target_names(tmp_path, key):
    group = {"mf": "mf_objective"}.get(key, key)
    for option in options(group):
        cfg = compose_cfg("train", [*TINY, f"{group}={option}"], tmp_path)
        part = build_part(cfg, key)
        assert f"{type(part).__module__}.{type(part).__qualname__}" == cfg[key]._target_
        if key == "mf":  # each objective YAML is the objective of its name
            assert type(part) is OBJECTIVES[option]


@pytest.mark.parametrize("option", options("backbone"))
def test_backbone_options_instantiate(tmp_path, option):
    cfg = compose_cfg("train", [f"backbone={option}"], tmp_path)
    net = instantiate(cfg.backbone)
    assert sum(p.numel() for p in net.parameters()) > 0 and net.frame_multiple >= 1


@pytest.mark.parametrize("option", options("data"))
def test_data_options_instantiate(tmp_path, option):
    extra = [f"data.base_dir={tmp_path}/d"] if option != "synthetic" else []
    cfg = compose_cfg("train", [f"data={option}", *extra], tmp_path)
    dm = instantiate(cfg.data)
    assert dm.spec.n_fft == cfg.data.spec.n_fft


def test_the_study_preset_keeps_the_corpus_the_study_ran_on(tmp_path):
    """experiment=study_cpu generates the make_it_enhance study's corpus (eSpeak only, 0-10 dB,
    nothing nearly clean) in a folder of its own, whatever the demo's corpus has become."""
    study = compose_cfg("train", ["experiment=study_cpu"], tmp_path).data
    demo = compose_cfg("train", ["experiment=demo"], tmp_path).data
    assert study.base_dir != demo.base_dir
    s = study.synthetic
    assert s.train_natural_share == 0 and s.near_clean_share == 0 and s.natural_near_clean_share is None
    assert s.train_snr_db is None and list(s.snr_db) == [0.0, 10.0] and s.num_train == 240
    assert demo.synthetic.train_natural_share > 0  # the demo's own has moved on


def test_the_large_demo_is_the_demo_with_its_documented_changes(tmp_path):
    """experiment=demo_large follows the demo's recipe wherever the demo goes, changing only what
    its header says (width, steps, magnitude compression) and its own name."""
    large = flat_config(compose_cfg("train", ["experiment=demo_large"], tmp_path))
    demo = flat_config(compose_cfg("train", ["experiment=demo"], tmp_path))
    keys = demo.keys() | large.keys()
    changed = {k: (demo.get(k), large.get(k)) for k in keys if demo.get(k) != large.get(k)}
    assert changed == {
        "backbone.nf": (16, 24),
        "trainer.max_steps": (900, 1200),
        "data.spec.spec_abs_exponent": (0.5, 0.667),
        "data.spec.spec_factor": (0.15, 0.127),
        "task_name": ("demo", "demo_large"),
    }


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer_options_instantiate(tmp_path, option):
    # GPU presets are instantiated on the CPU here; their strategy and device count are kept.
    cfg = compose_cfg("train", [f"trainer={option}", "trainer.accelerator=cpu"], tmp_path)
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("group", ["logger", "callbacks"])
def test_logger_and_callback_options_instantiate(tmp_path, group):
    for option in options(group):
        cfg = compose_cfg("train", [f"{group}={option}"], tmp_path)
        for node in (cfg.get(group) or {}).values():
            assert instantiate(node) is not None


@pytest.mark.parametrize(
    "preset", [f"experiment={o}" for o in options("experiment")] + [f"debug={o}" for o in options("debug")]
)
def test_presets_compose_and_build(tmp_path, preset):
    from meanflowse.training.fit import build_module

    cfg = compose_cfg("train", [preset], tmp_path)
    module = build_module(cfg)
    assert module.backbone is not None


@pytest.mark.parametrize("debug", options("debug"))
@pytest.mark.parametrize("experiment", [None, "demo"])
def test_debug_runs_have_their_own_task_and_folder(debug, experiment):
    """A debug run writes under outputs/debug (also on top of a preset with a fixed run folder),
    so it never overwrites a real run's last.ckpt, and ``ckpt_path=last`` of a real run, which
    looks among its own task's runs, never finds it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    overrides = ["paths.root_dir=/r", f"debug={debug}"] + ([f"experiment={experiment}"] if experiment else [])
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    assert cfg.task_name == "debug"
    assert run_dir.startswith("/r/outputs/debug/runs/"), run_dir


@pytest.mark.parametrize("preset", options("experiment"))
def test_presets_compose_with_a_folder_dataset(tmp_path, preset):
    """A preset's data source is only its default: `data=folder` replaces it (no generator, the
    user's base_dir), while the preset's crops, batches, steps and backbone still apply."""
    alone = compose_cfg("train", [f"experiment={preset}"], tmp_path)
    mine = tmp_path / "my_dataset"
    cfg = compose_cfg("train", [f"experiment={preset}", "data=folder", f"data.base_dir={mine}"], tmp_path)
    assert cfg.data._target_ == "meanflowse.data.datamodule.PairedSpecDataModule"
    assert cfg.data.synthetic is None and cfg.data.base_dir == str(mine)
    assert alone.data.synthetic is not None  # alone, the preset still generates its corpus
    for key in (
        "data.num_frames",
        "data.batch_size",
        "data.num_workers",
        "trainer.max_steps",
        "optim.lr",
        "backbone",
    ):
        assert OmegaConf.select(cfg, key) == OmegaConf.select(alone, key), key
    dm = instantiate(cfg.data)
    assert dm.synthetic is None and dm.base_dir == mine


def test_eval_config_composes(tmp_path):
    cfg = compose_cfg("eval", ["ckpt_path=x.ckpt", "input=y"], tmp_path)
    assert cfg.use_ema and cfg.sampler.nfe is None


def test_mf_objective_lives_at_mf(tmp_path):
    cfg = compose_cfg("train", ["mf_objective=cfm", "mf.loss=mae"], tmp_path)
    assert cfg.mf._target_.endswith("CFMObjective") and cfg.mf.loss == "mae"
    assert "mf_objective" not in cfg
    with pytest.raises(Exception, match="first_order_coef"):  # CFM has no c: a key it would ignore
        compose_cfg("train", ["mf_objective=cfm", "mf.first_order_coef=1.0"], tmp_path)


@pytest.mark.parametrize(
    "override, words",
    [
        ("mf.first_order_cof=0.5", ["first_order_cof"]),
        ("+mf.first_order_cof=0.5", ["first_order_cof", "MeanFlowObjective"]),
        ("path.sigma_max=abc", ["sigma_max", "abc"]),
    ],
)
def test_typos_fail_at_start_naming_the_key(tmp_path, override, words):
    """Hydra refuses the first and last at compose; `+key` is added by Hydra, so the schema
    check that builds the dataclasses (before any training) refuses it."""
    with pytest.raises(Exception) as err:
        cfg = compose_cfg("train", [override], tmp_path)
        build_part(cfg, "mf")
    text = str(err.value) + str(err.value.__cause__)
    assert all(w in text for w in words), text


@functools.cache
def _help(entry: str) -> subprocess.CompletedProcess:
    """``python ENTRY.py --help``, run once per entry point for every test that reads it."""
    return subprocess.run(
        [sys.executable, f"{entry}.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_train_py_cli_help_and_typo():
    helped = _help("train")
    assert helped.returncode == 0
    listed = {
        line.split(":")[0]: [o.strip() for o in line.split(":", 1)[1].split(",")]
        for line in helped.stdout.split("== Config ==")[0].splitlines()
        if ": " in line and not line.startswith(" ")
    }
    for group in (
        "backbone",
        "path",
        "mf_objective",
        "curriculum",
        "sampler",
        "trainer",
        "data",
        "experiment",
        "debug",
    ):
        assert group in listed, (group, helped.stdout[:3000])
    assert listed["backbone"] == ["dcunet", "ncsnpp", "ncsnpp_small", "ncsnpp_tiny"]
    # internals are out of sight: the schemas' group, and no alias of an option
    assert "schema" not in listed and "default" not in listed["sampler"], listed
    typo = subprocess.run(
        [sys.executable, "train.py", "mf.first_order_cof=0.5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert typo.returncode != 0 and "first_order_cof" in typo.stderr


@pytest.mark.parametrize("entry", ["eval", "train", "sweep"])
def test_each_entry_point_s_help_starts_with_its_own_usage(entry):
    helped = _help(entry)
    assert helped.returncode == 0, helped.stderr[-2000:]
    lines = helped.stdout.splitlines()
    assert lines[0].startswith(f"{entry}.py: ")
    assert any(f"python {entry}.py" in line for line in lines[:12])
    if entry == "eval":  # eval's own keys with their comments, none of train's groups
        assert any(line.startswith("sampler:") and "#" in line for line in lines)
        trains = ("backbone:", "trainer:", "== Configuration groups")
        assert not any(line.startswith(trains) for line in lines)
        assert len(lines) < 80
    else:  # usage and groups fit a screen before the composed config
        assert lines.index("== Config ==") < 60
