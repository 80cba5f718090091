"""The benchmark runs end to end (quick mode) and writes its JSON and chart."""
import json
import os
import subprocess
import sys

import pytest

from torchlstm import _C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_quick_runs(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench.py"), "--quick",
                        "--no-compile", "--repeats", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| headline | inference |" in r.stdout
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"]["torch"] and data["meta"]["gemm_peak_gflops"]["float32"] > 0
    assert data["meta"]["fma_peak_gflops"]["float32"] > 0  # the roofline's physical peak
    assert data["meta"]["resident_memory"]["calls"] > 0
    modes = {(row["case"], row["mode"]) for row in data["rows"]}
    assert ("headline", "forward+backward") in modes
    for row in data["rows"]:
        assert row["ms"]["torchlstm"] > 0 and row["ratio"]["eager loop"] > 0
        assert row["page_faults_per_call"]["torchlstm"] >= 0
    assert "page faults / call" in r.stdout
    # a cell variant's rows (issue 16) time the plain torchlstm of the same size beside it
    variant = [row for row in data["rows"] if row["case"] in ("peephole small",
                                                               "layer_norm small")]
    assert len(variant) == 4
    for row in variant:
        assert set(row["ms"]) == {"torchlstm", "torchlstm plain", "eager loop"}
        assert row["ratio"]["torchlstm plain"] > 0
    assert "cell variants (issue 16)" in r.stdout and "| peephole small |" in r.stdout
    assert "| layer_norm small |" in r.stdout
    assert (tmp_path / "ratios.png").stat().st_size > 1000


def _has(flag):
    with open("/proc/cpuinfo") as f:
        return flag in f.read().split()


@pytest.mark.parametrize("isa,flag", [("avx2", "avx2"), ("avx512", "avx512f")])
def test_fma_peak(isa, flag):
    """The FMA loop runs on every ISA the CPU has (a positive rate, two threads at least as
    fast as one within noise) and refuses one it lacks or does not know, by name."""
    if not _has(flag):
        with pytest.raises(ValueError, match="no"):
            _C.cpu_fma_peak(isa, 1, 0.05)
        return
    one, two = _C.cpu_fma_peak(isa, 1, 0.1), _C.cpu_fma_peak(isa, 2, 0.1)
    assert one > 1 and two > 0.5 * one
    with pytest.raises(ValueError, match="isa must be"):
        _C.cpu_fma_peak("sse9", 1, 0.05)
    with pytest.raises(ValueError, match="threads"):
        _C.cpu_fma_peak(isa, 0, 0.05)
