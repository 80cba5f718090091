"""The benchmark runs end to end (quick mode) and writes its JSON and chart."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_quick_runs(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench.py"), "--quick",
                        "--no-compile", "--repeats", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| headline | inference |" in r.stdout
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"]["torch"] and data["meta"]["gemm_peak_gflops"]["float32"] > 0
    modes = {(row["case"], row["mode"]) for row in data["rows"]}
    assert ("headline", "forward+backward") in modes
    for row in data["rows"]:
        assert row["ms"]["torchlstm"] > 0 and row["ratio"]["eager loop"] > 0
        assert row["page_faults_per_call"]["torchlstm"] >= 0
    assert "page faults / call" in r.stdout
    assert (tmp_path / "ratios.png").stat().st_size > 1000
