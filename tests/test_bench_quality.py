"""The pure parts of benchmarks/bench_quality.py: sizing the run to its budget, Lightning's
max_time string, and the table it prints (the training itself runs on a GPU, gpu.sh ``quality``)."""

import math

import pytest

from benchmarks.bench_quality import max_time, quality_table, steps_for_budget


def test_steps_fill_the_budget_at_the_probed_step_time():
    assert steps_for_budget(480.0, 0.2) == 2400
    assert steps_for_budget(480.0, 0.7) == 685  # rounded down: the budget is not exceeded
    assert steps_for_budget(1.0, 5.0) == 10  # never fewer than min_steps
    assert steps_for_budget(1.0, 5.0, min_steps=3) == 3


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_a_probe_that_timed_nothing_is_refused(bad):
    with pytest.raises(ValueError, match="probe-steps"):
        steps_for_budget(480.0, bad)


def test_max_time_is_lightnings_days_hours_minutes_seconds():
    assert max_time(600) == "00:00:10:00"
    assert max_time(3725.2) == "00:01:02:06"  # rounded up
    assert max_time(90061) == "01:01:01:01"


def test_table_puts_the_noisy_input_first_then_each_sampler():
    def summary(pesq, noisy_pesq):
        return {
            "pesq": pesq,
            "estoi": 0.5,
            "si_sdr": 10.0,
            "noisy": {"pesq": noisy_pesq, "estoi": 0.4, "si_sdr": 5.0},
        }

    table = quality_table({"euler_mf_nfe1": summary(2.0, 1.1), "euler_nfe5": summary(2.25, 1.1)})
    lines = table.splitlines()
    assert lines[0] == "| test split | pesq | estoi | si_sdr | dnsmos_ovrl |"
    assert (
        lines[2] == "| noisy input | 1.100 | 0.400 | 5.000 | nan |"
    )  # DNSMOS not measured: nan, not a number
    assert lines[3] == "| euler_mf_nfe1 | 2.000 | 0.500 | 10.000 | nan |"
    assert lines[4] == "| euler_nfe5 | 2.250 | 0.500 | 10.000 | nan |"
