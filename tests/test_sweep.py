"""sweep.py: the grid, one job's record (good and failed), the gather's table, CSV and plots."""

import csv
import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser

import meanflowse.sweep.gather as G
import meanflowse.sweep.job as S
from helpers import CONFIGS, TINY, compose_cfg
from meanflowse.method.curriculum import CurriculumConfig
from meanflowse.method.objectives import MeanFlowObjective
from meanflowse.sweep import plots as sweep_plots
from meanflowse.sweep import step_timer

# a tiny job without validation metrics or progress bars; checkpoints ranked by the one-step MSE
QUIET_JOB = [
    *TINY,
    "trainer.max_epochs=-1",
    "callbacks.progress=null",
    "callbacks.val_metrics=null",
    "callbacks.best_si_sdr=null",
    "callbacks.model_checkpoint.monitor=val/one_step_mse",
    "callbacks.model_checkpoint.mode=min",
    "trainer.enable_progress_bar=false",
    "sweep.timer_skip=0",
]


def _compose_sweep(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("sweep", overrides=overrides, return_hydra_config=True)


def _grid(params) -> list[dict]:
    """Expand ``hydra.sweeper.params`` the way the basic sweeper does (cartesian product)."""
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    axes = [[(o.key_or_group, v) for v in o.sweep_string_iterator()] for o in parsed]
    return [dict(p) for p in itertools.product(*axes)]


def test_default_grid_is_c_by_jvp_impl_with_three_nfes():
    cfg = _compose_sweep([])
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    grid = _grid(cfg.hydra.sweeper.params)
    assert len(grid) == 6
    assert {(float(p["mf.first_order_coef"]), p["mf.jvp_impl"]) for p in grid} == {
        (c, j) for c in (0.5, 1.0) for j in ("func", "fd", "autograd")
    }
    assert list(cfg.sweep.eval_nfe) == [1, 2, 5]  # NFE: evaluated per job, not retrained
    assert cfg.task_name == "sweep" and "step_timer" in cfg.callbacks
    assert cfg.hydra.callbacks.gather._target_ == "meanflowse.sweep.gather.GatherCallback"
    # the multirun process resolves the sweep folder before any job sets HydraConfig
    HydraConfig.instance().cfg = None
    assert str(cfg.hydra.sweep.dir).startswith("outputs/sweep/multiruns/")


def test_presets_compose_and_typos_fail():
    cpu = _compose_sweep(["experiment=sweep_cpu"])
    assert cpu.trainer.max_steps > 0 and cpu.data.num_workers <= 1
    assert len(_grid(cpu.hydra.sweeper.params)) == 6 and cpu.task_name == "sweep"
    optuna = _compose_sweep(["hydra/sweeper=optuna_tune"])
    assert optuna.hydra.sweeper._target_.endswith("OptunaSweeper")
    space = optuna.hydra.sweeper.params
    assert "interval" in space["optim.lr"] and space["mf.jvp_impl"] == "func"
    assert "mf.first_order_coef" in space and "curriculum.gamma_start" in space
    family = _compose_sweep(["hydra/sweeper=objectives"])
    assert family.hydra.sweeper.params["mf_objective"] == "meanflow,imf,split,cfm"
    slurm = _compose_sweep(["hydra/launcher=slurm"])
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")
    assert slurm.hydra.launcher.gpus_per_node == 1
    with pytest.raises(Exception, match="eval_nfes"):
        _compose_sweep(["sweep.eval_nfes=[1]"])


@pytest.mark.parametrize(
    "objective, params, name",
    [
        ("meanflow", {"c": 0.5, "jvp_impl": "func"}, "3-c0.5-func"),
        ("imf", {"c": 1.0, "jvp_impl": "func"}, "3-imf-c1-func"),
        ("split", {"c": None, "jvp_impl": "none"}, "3-split"),
        ("cfm", {"c": None, "jvp_impl": "none"}, "3-cfm"),
    ],
)
def test_a_sweep_can_vary_the_objective(tmp_path, objective, params, name):
    """`sweep.py -m mf_objective=meanflow,imf,split,cfm`: each job's record and W&B run name
    says its objective; the gathered tables sort and label by it."""
    cfg = compose_cfg("sweep", ["logger=wandb", f"mf_objective={objective}"], tmp_path / objective)
    got = S.job_params(cfg)
    assert got["objective"] == objective and {k: got[k] for k in params} == params
    S._set_logging_group(cfg, got, 3)
    assert cfg.logger.wandb.name == name
    rows = [{"status": "ok", "job": "0", "objective": objective, "c": got["c"], "jvp_impl": "x", "nfe": 1}]
    assert sweep_plots._line_label(rows[0], objectives_vary=True).startswith(objective)
    assert G._method(rows[0]) == ("x" if objective == "meanflow" else f"{objective}/x")


def test_wandb_group_is_set_from_the_sweep_config(tmp_path):
    cfg = compose_cfg("sweep", ["logger=wandb", "sweep.group=study-7"], tmp_path)
    S._set_logging_group(cfg, S.job_params(cfg), 3)
    assert cfg.logger.wandb.group == "study-7"
    assert cfg.logger.wandb.name == "3-c0.5-func"
    cfg = compose_cfg("sweep", ["logger=wandb"], tmp_path / "2026-01-01_00-00-00" / "4")
    assert S.sweep_group(cfg) == "sweep-4"  # a single run: its own folder


def test_step_timer_counts_meanflow_steps_apart():
    timer = step_timer.StepTimer(skip=0)
    module = SimpleNamespace(
        curriculum=CurriculumConfig(),
        objective=MeanFlowObjective(weight_final=0.25),
        device="cpu",
        progress=lambda: 0.0,
    )
    for progress in (0.0, 0.01, 0.5, 0.9):  # w_mf < 0.05 below progress 0.1
        module.progress = lambda p=progress: p
        timer.on_train_batch_start(None, module, None, 0)
        timer.on_train_batch_end(None, module, None, None, 0)
    assert len(timer.laps["cfm"]) == 2 and len(timer.laps["mf"]) == 2
    summary = timer.summary()
    assert summary["steps_timed_mf"] == 2 and math.isfinite(summary["step_time_mf_s"])


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    """Three tiny jobs into one multirun folder: job 0 trains, job 1 fails (negative lr), job 2
    trains without a checkpoint callback (evaluated from the weights in memory)."""
    root = tmp_path_factory.mktemp("multirun")
    data = tmp_path_factory.mktemp("data")
    common = [
        *QUIET_JOB,
        "trainer.max_steps=3",
        "callbacks.last_checkpoint=null",
        "sweep.eval_nfe=[1,2]",
        "sweep.group=test",
    ]
    returns = []
    for num, extra in enumerate([[], ["optim.lr=-1"], ["callbacks.model_checkpoint=null"]]):
        cfg = compose_cfg(
            "sweep", [*common, *extra, f"hydra.job.num={num}"], root / str(num), shared_data=data
        )
        returns.append(S.run_job(cfg))
    return root, returns, data


def test_good_job_records_training_step_time_and_every_nfe(multirun):
    root, returns, _ = multirun
    rec = json.loads((root / "0" / S.RECORD).read_text())
    assert rec["status"] == "ok" and rec["params"]["c"] == 0.5 and rec["job"]["num"] == 0
    assert rec["train"]["steps"] == 3 and rec["train"]["step_time_s"] > 0
    assert [e["nfe"] for e in rec["eval"]] == [1, 2]
    assert all(math.isfinite(e["si_sdr"]) and e["num_files"] == 2 for e in rec["eval"])
    assert rec["eval_weights"].endswith(".ckpt")  # EMA weights from the checkpoint
    assert math.isfinite(returns[0]) and returns[0] == rec["train"]["metrics"]["val/one_step_mse"]
    # eval.py's outputs, one folder per NFE, in the job folder
    for e in rec["eval"]:
        assert (root / "0" / "eval" / f"nfe{e['nfe']}" / "summary.json").is_file()
        assert len(list((root / "0" / "eval" / f"nfe{e['nfe']}").glob("*.wav"))) == 2
    no_ckpt = json.loads((root / "2" / S.RECORD).read_text())
    assert no_ckpt["status"] == "ok" and "saved from memory" in no_ckpt["eval_weights"]
    assert (root / "2" / "checkpoints" / "sweep_eval.ckpt").is_file()


def test_failed_job_is_recorded_and_returns_nan(multirun):
    root, returns, _ = multirun
    rec = json.loads((root / "1" / S.RECORD).read_text())
    assert rec["status"] == "failed" and "optim.lr=-1" in rec["error"]
    assert "Traceback" in rec["traceback"] and math.isnan(returns[1])


def test_gather_lists_good_rows_and_the_failure(multirun):
    root, _, _ = multirun
    out = G.gather(root)
    with open(root / G.RESULTS_CSV) as fh:
        rows = list(csv.DictReader(fh))
    good = [r for r in rows if r["status"] == "ok"]
    assert [(r["job"], r["nfe"]) for r in good] == [("0", "1"), ("0", "2"), ("2", "1"), ("2", "2")]
    assert all(r["jvp_impl"] == "func" and math.isfinite(float(r["si_sdr"])) for r in good)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and "optim.lr=-1" in failed[0]["error"]
    assert len(out["failed"]) == 1
    assert {p.name for p in out["plots"]} == {"metric_vs_nfe.png", "step_time.png"}


def test_single_run_reraises_after_writing_its_record(multirun, tmp_path):
    _, _, data = multirun
    cfg = compose_cfg("sweep", [*TINY, "optim.lr=-1", "sweep.group=x"], tmp_path, shared_data=data)
    with pytest.raises(ValueError, match="optim.lr=-1"):
        S.run_job(cfg, reraise=True)
    assert json.loads((tmp_path / S.RECORD).read_text())["status"] == "failed"


def _record(num, c, impl, *, status="ok", pesq=(1.5, 1.8, 2.0), step_s=0.5):
    rec = {
        "status": status,
        "job": {"num": num},
        "params": {"c": c, "jvp_impl": impl},
        "train": {
            "steps": 10,
            "step_time_s": step_s,
            "step_time_mf_s": step_s * 2,
            "step_time_cfm_s": step_s / 2,
            "steps_timed_mf": 3 if num == 0 else 20,
            "metrics": {"val/one_step_mse": 3.0},
        },
    }
    if status == "ok":
        rec["eval"] = [
            {"nfe": n, "pesq": p, "pesq_ci95": 0.05, "estoi": 0.7, "si_sdr": 10.0 + n, "rtf": 0.1 * n}
            for n, p in zip((1, 2, 5), pesq)
        ]
        rec["noisy"] = {"pesq": 1.2, "estoi": 0.6, "si_sdr": 5.0}
    else:
        rec["error"] = "RuntimeError: boom"
    return rec


def test_gather_of_a_synthetic_folder(tmp_path, capsys):
    records = [
        _record(0, 0.5, "func"),
        _record(1, 1.0, "fd", pesq=(1.1, 1.2, 1.3)),
        _record(2, 0.5, "autograd", status="failed"),
        _record(3, 1.0, "func", status="running"),
    ]
    for num, rec in enumerate(records):
        S.write_json_atomic(tmp_path / str(num) / S.RECORD, rec)
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / S.RECORD).write_text("{not json")
    out = G.gather(tmp_path)
    rows = out["rows"]
    assert len(rows) == 3 + 3 + 3  # 2 x 3 NFEs, 3 not-ok jobs
    assert {r["status"] for r in out["failed"]} == {"failed", "running", "unreadable"}
    row = next(r for r in rows if r["job"] == 1 and r["nfe"] == 2)
    assert row["pesq"] == 1.2 and row["noisy_pesq"] == 1.2 and row["mf_step_ms"] == 1000.0
    with open(tmp_path / G.RESULTS_CSV) as fh:
        assert len(list(csv.DictReader(fh))) == 9
    md = (tmp_path / "sweep_results.md").read_text()
    assert md.count("\n| 0.5 | func |") == 3 and "| fd | 1000 | 250 | 1 |" in md and "boom" in md
    for png in out["plots"]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    screen = capsys.readouterr().out
    assert "boom" in screen and "2/5 jobs ok" in screen
    assert "1.500 ± 0.050" in screen  # the table carries the 95% intervals
    assert "job(s) 0 rest on fewer than 10 timed" in " ".join(screen.split())  # 3 steps: warned
    # re-gather from the command line; an empty folder is a clear error
    assert G.main(["gather", str(tmp_path), "--no-plots"]) == 0
    (tmp_path / "empty").mkdir()
    assert G.main(["gather", str(tmp_path / "empty")]) == 2
    assert "no sweep_job.json" in capsys.readouterr().err


# -- the sweep reports eval.py's numbers -----------------------------------------------------------
def test_sweep_numbers_for_a_checkpoint_are_eval_pys(multirun, tmp_path):
    """eval.py (``evaluation.evaluate`` composed from configs/eval.yaml like eval.py does) on job
    0's checkpoint, split, sampler and each NFE gives exactly the numbers the job recorded, from
    byte-identical files; scoring the float output instead (what the sweep used to do) gives
    other numbers, which this comparison would have caught."""
    from hydra.utils import instantiate

    from meanflowse.inference.enhancer import Enhancer, load_module
    from meanflowse.inference.evaluation import evaluate
    from meanflowse.metrics import scores as M

    root, _, _ = multirun
    rec = json.loads((root / "0" / S.RECORD).read_text())
    ckpt = rec["eval_checkpoint"]
    for ev in rec["eval"]:
        out = tmp_path / f"nfe{ev['nfe']}"
        summary = evaluate(
            compose_cfg(
                "eval",
                [
                    f"ckpt_path={ckpt}",
                    f"split={rec['eval_split']}",
                    f"sampler.nfe={ev['nfe']}",
                    f"output={out}",
                    "dnsmos=false",
                    "speaker=false",
                    "progress=false",
                ],
                tmp_path / "hydra",
            )
        )
        assert math.isfinite(ev["si_sdr"]) and math.isfinite(rec["noisy"]["pesq"])
        for key in ("pesq", "estoi", "si_sdr"):
            for ours, theirs in ((ev[key], summary[key]), (rec["noisy"][key], summary["noisy"][key])):
                # equal to round-off: the job scored in another process (ESTOI's float sums
                # may differ in the last bit with its thread count), from the same bytes
                assert ours == pytest.approx(theirs, rel=1e-12, nan_ok=True), (ev["nfe"], key, ours, theirs)
        assert ev["num_files"] == summary["num_files"] == 2 and ev["num_failed"] == 0
        ours = sorted(Path(ev["output"]).glob("*.wav"))
        assert [p.name for p in ours] == sorted(p.name for p in out.glob("*.wav"))
        for p in ours:
            assert p.read_bytes() == (out / p.name).read_bytes()
    # the float output scores differently: the quantisation to the file's format matters
    first = rec["eval"][0]
    _, train_cfg = load_module(ckpt)
    dataset = instantiate(train_cfg.data).dataset(rec["eval_split"])
    pair = dataset.load_pair(0)
    enhancer = Enhancer.from_checkpoint(ckpt, nfe=first["nfe"], seed=0)
    floating = enhancer.enhance(pair["noisy"][None])[0]
    with open(Path(first["output"]) / "metrics.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if Path(r["file"]).stem == Path(pair["name"]).stem)
    from_file = float(row["si_sdr"])
    as_float = M.si_sdr(pair["clean"].numpy(), floating.numpy())
    assert math.isfinite(from_file) and as_float != from_file
    assert as_float == pytest.approx(from_file, abs=0.5)  # the same enhancement, re-quantised


def test_gather_callback_writes_the_table_when_the_multirun_ends(tmp_path, caplog):
    """on_multirun_end gathers ``hydra.sweep.dir``: the CSV has a row per job and NFE with the
    job records' numbers; a folder without records is a warning, not an error."""
    from omegaconf import OmegaConf

    for num, rec in enumerate(
        [
            _record(0, 0.5, "func"),
            _record(1, 1.0, "fd", pesq=(1.1, 1.2, 1.3)),
            _record(2, 1.0, "autograd", status="failed"),
        ]
    ):
        S.write_json_atomic(tmp_path / "multi" / str(num) / S.RECORD, rec)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "multi")}}})
    G.GatherCallback().on_multirun_end(config=config)
    with open(tmp_path / "multi" / G.RESULTS_CSV) as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["job"], r["status"], r["nfe"]) for r in rows] == [
        ("0", "ok", "1"),
        ("0", "ok", "2"),
        ("0", "ok", "5"),
        ("1", "ok", "1"),
        ("1", "ok", "2"),
        ("1", "ok", "5"),
        ("2", "failed", ""),
    ]
    assert [float(r["pesq"]) for r in rows[:6]] == [1.5, 1.8, 2.0, 1.1, 1.2, 1.3]
    assert rows[4]["jvp_impl"] == "fd" and float(rows[4]["c"]) == 1.0
    assert rows[6]["error"] == "RuntimeError: boom"
    assert (tmp_path / "multi" / "sweep_results.md").is_file()
    (tmp_path / "empty").mkdir()
    G.GatherCallback().on_multirun_end(
        config=OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "empty")}}})
    )
    assert "nothing gathered" in caplog.text
    assert not (tmp_path / "empty" / G.RESULTS_CSV).exists()


def test_sweep_py_multirun_as_a_process(multirun, tmp_path):
    """``python sweep.py -m`` with the tiny overrides and a two-point grid (c = 0.5, 1): two
    job folders with their records, and the table gathered by the Hydra callback at the end."""
    import subprocess
    import sys

    from helpers import ROOT

    _, _, data = multirun  # the corpus the other jobs generated
    multi = tmp_path / "multi"
    overrides = [
        *QUIET_JOB,
        "trainer.max_steps=2",
        "sweep.eval_nfe=[1]",
        "sweep.group=test",
        "mf.first_order_coef=0.5,1.0",
        "mf.jvp_impl=func",
        f"paths.data_dir={data}",
        f"hydra.sweep.dir={multi}",
    ]
    proc = subprocess.run(
        [sys.executable, "sweep.py", "-m", *overrides], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads((multi / str(n) / S.RECORD).read_text()) for n in (0, 1)]
    assert [r["status"] for r in records] == ["ok", "ok"], [r.get("error") for r in records]
    assert [r["params"]["c"] for r in records] == [0.5, 1.0]
    assert all(r["train"]["steps"] == 2 and r["eval"][0]["nfe"] == 1 for r in records)
    with open(multi / G.RESULTS_CSV) as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["job"], float(r["c"]), r["nfe"]) for r in rows] == [("0", 0.5, "1"), ("1", 1.0, "1")]
    assert [float(r["si_sdr"]) for r in rows] == [r["eval"][0]["si_sdr"] for r in records]
    assert all(math.isfinite(float(r["si_sdr"])) for r in rows)


# -- what a sweep job's W&B run holds (offline) ----------------------------------------------------
def _wandb_records(run_dir: Path):
    """The protobuf records of an offline run's ``run-*.wandb`` file. It is a LevelDB-style log:
    a 7-byte header, then 32 KiB blocks of chunks (crc32 of type and data, length, type:
    full/first/middle/last). W&B's service process may still be appending after
    ``wandb.finish()`` returns on a busy machine, so the file is read until two reads agree, and
    every chunk's checksum is checked (a torn write fails here, not as a protobuf error)."""
    import struct
    import time
    import zlib

    from wandb.proto import wandb_internal_pb2 as pb

    path = next(run_dir.glob("run-*.wandb"))
    data = path.read_bytes()
    for _ in range(50):
        time.sleep(0.1)
        data, previous = path.read_bytes(), data
        if data == previous:
            break
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind not in (1, 2, 3, 4):  # zero fill or an unknown type: the end of the log
            break
        assert zlib.crc32(bytes([kind]) + chunk) == crc, f"{path}: bad chunk ending at byte {pos}"
        if kind in (1, 4):  # full, or the last piece of a split record
            record = pb.Record()
            record.ParseFromString(pending + chunk)
            pending = b""
            yield record
        else:  # first or middle piece
            pending += chunk


def test_a_two_job_sweep_s_wandb_runs_hold_flat_keys_tags_and_step_time(tmp_path, capfd):
    """Two tiny jobs (c 0.5 and 1.0) with logger=wandb (offline), as a multirun's jobs 0 and 1:
    each run's config has top-level dotted keys (group by ``mf.first_order_coef``), its tags and
    job_type say the task, both share the sweep's group under their own names, and each job's
    step time and peak memory are logged beside the eval numbers. wandb prints no warning about
    the ``anonymous`` setting (Lightning passed it; QuietWandbLogger does not)."""
    import json as json_

    runs = {}
    for num, c in enumerate((0.5, 1.0)):
        job = tmp_path / str(num)
        cfg = compose_cfg(
            "sweep",
            [*QUIET_JOB, "logger=wandb", "trainer.max_steps=3", "sweep.eval_nfe=[1]", "sweep.group=wb"]
            + [f"mf.first_order_coef={c}"],
            job,
        )
        S.run_job(cfg, reraise=True)
        config, logged, run = {}, set(), None
        for record in _wandb_records(next((job / "wandb").glob("offline-run-*"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                config.update({i.key: i.value_json for i in record.run.config.update})
            elif kind == "config":
                config.update({i.key: i.value_json for i in record.config.update})
            elif kind == "history":
                logged.update(i.key or "/".join(i.nested_key) for i in record.history.item)
        assert run is not None and "sweep" in list(run.tags) and run.job_type == "sweep"
        assert (
            json_.loads(config["mf.first_order_coef"]) == c and json_.loads(config["mf.jvp_impl"]) == "func"
        )
        assert {"train/step_time_mf_s", "train/peak_memory_mb", "eval/nfe1/pesq"} <= logged
        runs[num] = run
    assert runs[0].run_group == runs[1].run_group == "wb"
    assert runs[0].run_id != runs[1].run_id and runs[0].display_name != runs[1].display_name
    assert "anonymous" not in "".join(capfd.readouterr())
