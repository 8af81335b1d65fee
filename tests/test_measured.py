"""The one measured path and the one metric registry (issue "House 2").

* a metric added to the registry, and nowhere else, reaches metrics.csv, summary.json, the
  ``val/`` logs and a sweep record;
* scoring the written files (eval.py) and the float output in memory (validation, the study)
  give the same numbers on the same items when the files hold the float output exactly;
* no module but the registry spells out a list of metric names.
"""

from __future__ import annotations

import ast
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import meanflowse.sweep.job as S
from eval_helpers import SR, eval_cfg, rows, signal, write_tiny_checkpoint
from helpers import ROOT, SHORT_TRAIN, compose_cfg
from meanflowse.inference.evaluation import evaluate, load_enhancer
from meanflowse.inference.measured import enhance_and_score, memory_item
from meanflowse.metrics import registry
from meanflowse.metrics.scores import SI_SDR_MAX_DB


def level_ratio(ref, deg, sr) -> float:
    """A made-up intrusive metric: RMS of the signal over RMS of the reference."""
    ref, deg = np.asarray(ref, dtype=np.float64), np.asarray(deg, dtype=np.float64)
    return float(np.sqrt(np.mean(deg**2)) / np.sqrt(np.mean(ref**2)))


@pytest.fixture
def dummy_metric(monkeypatch):
    metric = registry.Metric("level_ratio", level_ratio, "level ratio", higher_is_better=False)
    monkeypatch.setattr(registry, "METRICS", (*registry.METRICS, metric))
    return metric


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


def _pairs(
    folder: Path, names=("a.wav", "b.wav"), *, subtype: str = "FLOAT", level: float = 0.5
) -> list[tuple[Path, Path]]:
    """noisy/ and clean/ files at the model's rate; FLOAT keeps a written output exact."""
    out = []
    for k, name in enumerate(names):
        clean = signal(1.0, seed=k)[0] * level
        noisy = clean + 0.1 * signal(1.0, seed=10 + k)[0]
        for role, x in (("clean", clean), ("noisy", noisy)):
            (folder / role).mkdir(parents=True, exist_ok=True)
            sf.write(folder / role / name, x.numpy(), SR, subtype=subtype)
        out.append((folder / "noisy" / name, folder / "clean" / name))
    return out


def test_registry_keys_derive_from_one_list(dummy_metric):
    assert registry.keys(registry.selected()) == ("pesq", "estoi", "si_sdr", "level_ratio")
    assert registry.keys(registry.selected(dnsmos=True))[3:6] == ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
    assert registry.brief_keys(registry.selected(dnsmos=True)) == (
        "pesq",
        "estoi",
        "si_sdr",
        "dnsmos_ovrl",
        "level_ratio",
    )
    assert "spk_sim" in registry.keys(registry.selected(speaker=True))
    assert registry.reference_keys() == ("pesq", "estoi", "si_sdr", "level_ratio")
    assert registry.label("dnsmos_ovrl") == "DNSMOS OVRL" and registry.label("si_sdr") == "SI-SDR (dB)"
    with pytest.raises(KeyError, match="unknown metric switches"):
        registry.selected(dnsmos_typo=True)


def test_a_failing_metric_is_nan_with_its_message_and_a_bug_propagates(monkeypatch):
    x = np.random.default_rng(0).standard_normal(SR)

    def refuses(ref, deg, sr):
        raise registry.MetricError("too quiet to score")

    bad = registry.Metric("refuses", refuses, "refuses")
    got = registry.score(x, 0.5 * x, SR, [*registry.selected(), bad])
    assert math.isnan(got["refuses"]) and got["errors"] == {"refuses": "too quiet to score"}
    assert got["si_sdr"] == SI_SDR_MAX_DB  # a scaled copy: the other metrics are measured
    broken = registry.Metric("broken", lambda ref, deg, sr: {}["a bug"], "broken")
    with pytest.raises(KeyError):
        registry.score(x, x, SR, [broken])


def test_a_registered_metric_reaches_eval_reports(dummy_metric, ckpt, tmp_path):
    files = _pairs(tmp_path / "split")
    out = tmp_path / "out"
    summary = evaluate(eval_cfg(ckpt, tmp_path, f"input={tmp_path / 'split'}", f"output={out}"))
    got = rows(out)
    for noisy_path, clean_path in files:
        row = got[noisy_path.name]
        clean = sf.read(str(clean_path))[0]
        enhanced = sf.read(str(out / noisy_path.name))[0]
        assert float(row["level_ratio"]) == pytest.approx(level_ratio(clean, enhanced, SR), rel=1e-9)
        assert float(row["noisy_level_ratio"]) == pytest.approx(
            level_ratio(clean, sf.read(str(noisy_path))[0], SR), rel=1e-9
        )
    saved = json.loads((out / "summary.json").read_text())
    assert saved["level_ratio"] == pytest.approx(np.mean([float(r["level_ratio"]) for r in got.values()]))
    assert saved["counts"]["level_ratio"] == 2 and math.isfinite(saved["ci95"]["level_ratio"])
    assert math.isfinite(saved["noisy"]["level_ratio"]) and summary["level_ratio"] == saved["level_ratio"]


def test_a_registered_metric_reaches_val_logs_and_the_sweep_record(dummy_metric, tmp_path):
    cfg = compose_cfg(
        "sweep",
        [
            *SHORT_TRAIN,
            "trainer.enable_progress_bar=false",
            "callbacks.val_metrics.num_eval_files=2",
            "sweep.eval_nfe=[1]",
            "sweep.timer_skip=0",
            "sweep.group=test",
        ],
        tmp_path,
    )
    S.run_job(cfg, reraise=True)
    record = json.loads((tmp_path / S.RECORD).read_text())
    assert record["status"] == "ok", record.get("error")
    assert math.isfinite(record["train"]["metrics"]["val/level_ratio"])
    ev = record["eval"][0]
    assert math.isfinite(ev["level_ratio"]) and "level_ratio_ci95" in ev
    assert math.isfinite(record["noisy"]["level_ratio"])
    assert "eval/nfe1/level_ratio" in S.flat_metrics(record)
    from meanflowse.sweep.gather import gather

    gathered = gather(tmp_path, plots=False)
    with open(gathered["csv"], newline="") as fh:
        header = next(csv.reader(fh))
    assert "level_ratio" in header and "noisy_level_ratio" in header


def test_written_and_in_memory_scoring_agree_on_float_files(ckpt, tmp_path):
    """eval.py writes FLOAT WAVs at the model's rate and scores them read back; validation and
    the study score the float output in memory: on the same items the numbers agree."""
    files = _pairs(tmp_path / "split", names=("a.wav", "b.wav", "c.wav"))
    out = tmp_path / "out"
    cfg = eval_cfg(ckpt, tmp_path, f"input={tmp_path / 'split'}", f"output={out}")
    evaluate(cfg)
    written = rows(out)
    enhancer = load_enhancer(cfg)  # the same settings (seed, sampler, batching) as eval.py's
    items = [
        memory_item(
            n.name,
            torch.from_numpy(sf.read(str(n), dtype="float32")[0]),
            SR,
            torch.from_numpy(sf.read(str(c), dtype="float32")[0]),
        )
        for n, c in files
    ]
    measured = enhance_and_score(enhancer, items, metrics=registry.selected())
    keys = registry.keys(registry.selected())
    assert [r["file"] for r in measured.rows] == sorted(written)
    for row in measured.rows:
        for key in (*keys, *(f"noisy_{k}" for k in keys)):
            assert row[key] == pytest.approx(float(written[row["file"]][key]), abs=1e-6), (row["file"], key)
    saved = json.loads((out / "summary.json").read_text())
    for key in keys:
        assert measured.summary[key] == pytest.approx(saved[key], abs=1e-6)
        assert measured.summary["noisy"][key] == pytest.approx(saved["noisy"][key], abs=1e-6)


def test_written_16_bit_files_score_within_quantisation_of_the_float_output(ckpt, tmp_path):
    """With 16-bit inputs eval.py scores the quantised file it shipped: close to, and not the
    same as, the float output (the reason the shared path keeps both, as one argument)."""
    # quiet, so the untrained model's output stays inside [-1, 1]: no clipping, only rounding
    files = _pairs(tmp_path / "split", names=("a.wav",), subtype="PCM_16", level=0.01)
    out = tmp_path / "out"
    cfg = eval_cfg(ckpt, tmp_path, f"input={tmp_path / 'split'}", f"output={out}")
    evaluate(cfg)
    written = rows(out)["a.wav"]
    noisy, clean = (torch.from_numpy(sf.read(str(p), dtype="float32")[0]) for p in files[0])
    measured = enhance_and_score(
        load_enhancer(cfg),
        [memory_item("a.wav", noisy, SR, clean)],
        metrics=registry.selected(),
    )
    ours = measured.rows[0]["si_sdr"]
    assert ours != float(written["si_sdr"]) and ours == pytest.approx(float(written["si_sdr"]), abs=0.5)


# ------------------------------------------------------------------------------ one list
def _metric_name_lists(tree: ast.AST, names: set[str]) -> list[int]:
    """Lines of tuples, lists and sets holding two or more metric names as string literals
    (``__all__``, which names functions such as ``estoi``, is not a list of metrics)."""
    exports = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and id(node) not in exports:
            literal = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if len(set(literal) & names) >= 2:
                found.append(node.lineno)
    return found


def test_no_module_but_the_registry_lists_metric_names():
    names = set(registry.keys()) | {m.name for m in registry.METRICS}
    offenders = {}
    for path in sorted((ROOT / "meanflowse").rglob("*.py")) + sorted((ROOT / "experiments").rglob("*.py")):
        if path.name == "registry.py":
            continue
        lines = _metric_name_lists(ast.parse(path.read_text()), names)
        if lines:
            offenders[str(path.relative_to(ROOT))] = lines
    assert not offenders, f"metric names listed outside meanflowse/metrics/registry.py: {offenders}"
    # the check itself finds such a list
    assert _metric_name_lists(ast.parse('KEYS = ("pesq", "estoi")'), names) == [1]
