"""A checkpoint eval.py cannot use is one CheckpointError that says what is wrong in words
(issue 28, item 1): empty, text, truncated, a list, no weights, weights of another model."""

from __future__ import annotations

import pytest
import torch

from eval_helpers import write_tiny_checkpoint
from meanflowse.inference.enhancer import CheckpointError, load_module


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("good"))


def _write(path, make):
    path.parent.mkdir(parents=True, exist_ok=True)
    make(path)
    return path


def _without_weights(good):
    def make(path):
        data = torch.load(good, weights_only=True)
        del data["state_dict"]
        torch.save(data, path)

    return make


def _other_model(good):
    def make(path):
        data = torch.load(good, weights_only=True)
        name = next(k for k, v in data["state_dict"].items() if v.ndim == 4)
        data["state_dict"][name] = torch.zeros(3, 3, 3, 3)
        torch.save(data, path)

    return make


def _flipped(good):
    """Bytes flipped inside the first tensor's record: torch.load reads it without complaint."""

    def make(path):
        data = bytearray(good.read_bytes())
        start = data.index(b"data/0") + 200
        data[start : start + 16] = bytes(255 - b for b in data[start : start + 16])
        path.write_bytes(bytes(data))

    return make


CASES = {
    "empty": (lambda g: lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "text": (
        lambda g: lambda p: p.write_text("epoch=3 step=100\n"),
        "not a torch checkpoint (no zip archive)",
    ),
    "truncated": (
        lambda g: lambda p: p.write_bytes(g.read_bytes()[:-500]),
        "not a readable MeanFlowSE checkpoint",
    ),
    "a list": (lambda g: lambda p: torch.save([1, 2], p), "holds a list, not a train.py checkpoint"),
    "no weights": (_without_weights, "a stored config but no weights (state_dict)"),
    "flipped bytes": (_flipped, "fails its CRC check"),
    "other model": (_other_model, "weights that do not fit its stored config's model (size mismatch for"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_checkpoint_says_what_is_wrong_in_one_line(good, tmp_path, case):
    maker, words = CASES[case]
    path = _write(tmp_path / f"{case.replace(' ', '_')}.ckpt", maker(good))
    with pytest.raises(CheckpointError) as err:
        load_module(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and words in message, message
    assert "\n" not in message and "()" not in message


def test_the_good_one_loads(good):
    module, cfg = load_module(good)
    assert cfg.backbone._target_.endswith("NCSNpp") and not module.training
