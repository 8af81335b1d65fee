"""`import meanflowse` is all a notebook needs to compose the project's configs from Python."""

import subprocess
import sys

from helpers import CONFIGS, ROOT

# a fresh interpreter: the test process has already registered the schemas through helpers.py
NOTEBOOK = f"""
import meanflowse
from hydra import compose, initialize_config_dir
with initialize_config_dir(config_dir={str(CONFIGS)!r}, version_base="1.3"):
    cfg = compose("train", overrides=["mf.first_order_coef=1.0"])
print(cfg.mf.first_order_coef, cfg.sampler.name)
"""


def test_import_meanflowse_registers_the_schemas():
    done = subprocess.run(
        [sys.executable, "-c", NOTEBOOK], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    coef, sampler = done.stdout.split()
    assert float(coef) == 1.0 and sampler


def test_a_typo_still_fails_naming_the_key():
    typo = NOTEBOOK.replace("mf.first_order_coef=1.0", "mf.first_order_cof=1.0")
    done = subprocess.run([sys.executable, "-c", typo], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "first_order_cof" in done.stderr
