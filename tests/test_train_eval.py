"""The thin slice end to end: train (fast_dev_run and a few MeanFlow steps), then eval.py."""

import json
import math
import shutil

import pytest
import soundfile as sf
import torch

from helpers import TINY, compose_cfg


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """Four steps with the MeanFlow branch on from the first step (warm-up off)."""
    from meanflowse.training.fit import train

    out = tmp_path_factory.mktemp("run")
    cfg = compose_cfg(
        "train",
        [
            *TINY,
            "trainer.max_steps=4",
            "trainer.max_epochs=-1",
            "mf.weight_final=1.0",
            "curriculum.mf_warmup_frac=0",
            "curriculum.mf_skip_below=0",
            "callbacks.progress=null",
        ],
        out,
        shared_data=data_dir,
    )
    metrics, objs = train(cfg)
    return out, metrics, objs


def test_fast_dev_run(tmp_path, data_dir):
    from meanflowse.training.fit import train

    cfg = compose_cfg("train", [*TINY, "debug=fdr"], tmp_path, shared_data=data_dir)
    metrics, objs = train(cfg)
    assert objs["trainer"].global_step == 1
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/one_step_mse"])


def test_meanflow_steps_write_checkpoints_with_config_and_ema(trained):
    out, metrics, objs = trained
    assert objs["trainer"].global_step == 4
    assert metrics["train/w_mf"] == 1.0 and "train/jvp_norm" in metrics
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["config"]["mf"]["weight_final"] == 1.0
    shadow = ckpt["callbacks"]["EMA"]["shadow"]
    raw = ckpt["state_dict"]
    assert set(shadow) <= set(raw)
    assert any(not torch.equal(shadow[k], raw[k]) for k in shadow)  # the average differs


def test_eval_enhances_a_split_folder_and_writes_metrics(trained, data_dir, tmp_path):
    from meanflowse.inference.evaluation import evaluate

    out, _, _ = trained
    cfg = compose_cfg(
        "eval",
        [
            f"ckpt_path={out}/checkpoints/last.ckpt",
            f"input={data_dir}/synthetic/test",
            f"output={tmp_path}/enh",
            "dnsmos=false",
            "speaker=false",
            "progress=false",
        ],
        tmp_path,
    )
    summary = evaluate(cfg)
    noisy = sorted((data_dir / "synthetic" / "test" / "noisy").glob("*.wav"))
    assert summary["num_files"] == len(noisy) == 2 and summary["num_failed"] == 0
    for src in noisy:
        enh = tmp_path / "enh" / src.name
        assert sf.info(str(enh)).frames == sf.info(str(src)).frames
        assert sf.info(str(enh)).samplerate == sf.info(str(src)).samplerate
    saved = json.loads((tmp_path / "enh" / "summary.json").read_text())
    assert saved["nfe"] == 1 and math.isfinite(saved["si_sdr"]) and math.isfinite(saved["noisy"]["pesq"])
    assert (tmp_path / "enh" / "metrics.csv").read_text().count("\n") == 3
    # resumable: a second run enhances nothing, measures the outputs on disk and reports the same
    again = evaluate(cfg)
    assert again["num_files"] == 2 and math.isnan(again["rtf"])
    assert again["si_sdr"] == saved["si_sdr"] and again["pesq"] == saved["pesq"]


def test_eval_split_of_the_checkpoints_dataset(trained, data_dir, tmp_path):
    """`eval.py ckpt_path=... split=test`: the base_dir comes from the checkpoint's config."""
    from meanflowse.inference.evaluation import evaluate

    out, _, _ = trained
    ckpt = out / "checkpoints" / "last.ckpt"
    cfg = compose_cfg(
        "eval",
        [
            f"ckpt_path={ckpt}",
            "split=test",
            "dnsmos=false",
            "speaker=false",
            "progress=false",
            "sampler.name=euler",
            "sampler.nfe=2",
        ],
        tmp_path,
    )
    summary = evaluate(cfg)
    enh = out / "enhanced" / "test"  # default: <run>/enhanced/<split>
    assert summary["num_files"] == 2 and summary["nfe"] == 2 and math.isfinite(summary["pesq"])
    assert sorted(p.name for p in enh.glob("*.wav")) == ["test_00000.wav", "test_00001.wav"]
    # data.base_dir= names another dataset folder: read as it is, never generated into
    from meanflowse.inference.evaluation import EvalError

    other = tmp_path / "other"
    for role in ("clean", "noisy"):
        (other / "test" / role).mkdir(parents=True)
        shutil.copy(data_dir / "synthetic" / "test" / role / "test_00001.wav", other / "test" / role)
    summary = evaluate(
        compose_cfg(
            "eval",
            [
                f"ckpt_path={ckpt}",
                "split=test",
                f"data.base_dir={other}",
                f"output={tmp_path}/other_enh",
                "metrics=false",
                "progress=false",
            ],
            tmp_path,
        )
    )
    assert summary["num_files"] == 1 and (tmp_path / "other_enh" / "test_00001.wav").is_file()
    with pytest.raises(EvalError, match="split=test"):
        evaluate(
            compose_cfg(
                "eval",
                [f"ckpt_path={ckpt}", "split=test", f"data.base_dir={tmp_path}/none", "progress=false"],
                tmp_path,
            )
        )
    assert not (tmp_path / "none").exists()
