"""`plphp bench --memory-budget`: sizes, the batch search, and the command on a tiny shape."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from plphp.bench.budget import BatchSearch, Probe, parse_size
from plphp.errors import ConfigError


@pytest.mark.parametrize(
    "text, size",
    [("8GiB", 8 * 2**30), ("512MiB", 512 * 2**20), ("4GB", 4 * 10**9), ("1.5 GiB", int(1.5 * 2**30)), ("1000", 1000)],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "8 TiB", "-1GiB", "0"])
def test_bad_sizes_are_one_line(text):
    with pytest.raises(ConfigError, match="--memory-budget") as caught:
        parse_size(text)
    assert "\n" not in str(caught.value)


class _Modelled(BatchSearch):
    """The search over a peak model instead of real runs: `peak(batch)`, counting the probes."""

    def __init__(self, peak, budget, limit=4096):
        self.peak, self.budget, self.limit, self.probes = peak, budget, limit, {}

    def probe(self, batch):
        if batch not in self.probes:
            value = self.peak(batch)
            self.probes[batch] = Probe(batch, value, value, value <= self.budget)
        return self.probes[batch]


@pytest.mark.parametrize("fixed, per_sequence, budget", [(600, 7, 1000), (600, 7, 607), (100, 1, 5000), (10, 50, 5000)])
def test_the_search_finds_the_largest_batch_of_a_linear_peak_in_few_probes(fixed, per_sequence, budget):
    search = _Modelled(lambda b: fixed + per_sequence * b, budget)
    want = max(0, (budget - fixed) // per_sequence)
    assert search.largest() == min(want, 4096)
    assert len(search.probes) <= 4, sorted(search.probes)


@pytest.mark.parametrize("budget", [700, 1000, 3000])
def test_the_search_is_right_when_the_peak_is_not_linear(budget):
    # Per-sequence cost rising with the batch (buffers grow in steps): the seed overshoots or undershoots.
    peak = lambda b: 600 + 2 * b + (b // 16) * 40 + (b**2) // 50  # noqa: E731
    search = _Modelled(peak, budget)
    want = max(b for b in range(0, 5000) if b == 0 or peak(b) <= budget)
    assert search.largest() == want
    assert all(probe.fits == (probe.peak_decode <= budget) for probe in search.probes.values())


def test_the_search_respects_the_limit_and_a_budget_below_one_sequence():
    assert _Modelled(lambda b: b, 10**9, limit=37).largest() == 37
    assert _Modelled(lambda b: 500 + b, 400).largest() == 0


def _bench(tmp_path, *extra):
    out = tmp_path / "budget.json"
    args = [sys.executable, "-m", "plphp", "bench", "--model", "tiny-llava-onevision", "--vision-tokens", "60"]
    args += ["--new-tokens", "2", "--rounds", "1", "--threads", "1", "--json", str(out), *extra]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(out.read_text()), done.stdout


def test_the_command_sizes_times_and_writes_every_output(tmp_path):
    payload, text = _bench(
        tmp_path,
        "--memory-budget",
        "64GiB",
        "--max-batch",
        "3",
        "--policy",
        "plphp",
        "--markdown",
        str(tmp_path / "b.md"),
        "--plot",
        str(tmp_path / "b.png"),
    )
    rows = {row["label"]: row for row in payload["rows"]}
    assert set(rows) == {"unpruned", "plphp"}
    for row in rows.values():
        assert row["max_batch"] == 3 and row["fits_budget"] and row["tokens_per_s"]["median"] > 0
        assert [probe["batch"] for probe in row["probes"]][:2] == [1, 2]
    assert rows["unpruned"]["batch_ratio"] == 1.0 and rows["plphp"]["throughput_ratio"] > 0
    assert rows["plphp"]["kv_bytes_per_sequence"] < rows["unpruned"]["kv_bytes_per_sequence"]
    assert payload["setup"]["budget"] == 64 * 2**30
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG" and "| plphp | 3 |" in (tmp_path / "b.md").read_text()


def test_a_budget_below_one_sequence_reports_batch_zero(tmp_path):
    payload, _ = _bench(tmp_path, "--memory-budget", "1MiB", "--policy", "plphp")
    assert all(row["max_batch"] == 0 and row["tokens_per_s"] is None for row in payload["rows"])
