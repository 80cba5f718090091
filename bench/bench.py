"""The microbenchmark: torchlstm.LSTM beside torch.nn.LSTM (oneDNN on CPU, cuDNN on GPU),
in one process, repeats alternated between the two, medians reported as ratios.

    python bench/bench.py [--quick] [--device cpu|cuda] [--repeats N] [--json out.json]

ratio = nn.LSTM time / torchlstm time: above 1 means torchlstm is faster.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torchlstm  # noqa: E402

# (name, T, B, I, H, extra constructor kwargs)
CASES = [
    ("headline", 100, 32, 128, 256, {}),
    ("latency B=1", 100, 1, 128, 128, {}),
    ("proj_size=128", 100, 32, 128, 256, {"proj_size": 128}),
    ("fastrnns default", 100, 64, 512, 512, {}),
]
QUICK_CASES = [("headline", 100, 32, 128, 256, {}), ("small", 20, 4, 32, 64, {})]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(model, x, mode):
    """A closure running one inference or one forward+backward pass."""
    if mode == "inference":
        def step():
            with torch.no_grad():
                model(x)
    else:
        params = list(model.parameters())

        def step():
            out, (h, c) = model(x)
            torch.autograd.grad(out.sum() + h.sum() + c.sum(), [x] + params)
    return step


def time_alternating(steps, repeats, device, min_time=0.05):
    """Median seconds per call of each step; the repeats interleave the steps so that
    machine noise (a shared, 2-core box) hits every contender alike."""
    for s in steps:  # warm-up (allocator, BLAS packing, lazy init)
        s()
        s()
    sync(device)
    # calls per timed sample, so one sample lasts at least min_time
    t0 = time.perf_counter()
    steps[0]()
    sync(device)
    once = max(time.perf_counter() - t0, 1e-6)
    inner = max(1, int(min_time / once))
    samples = [[] for _ in steps]
    for _ in range(repeats):
        for i, s in enumerate(steps):
            sync(device)
            t0 = time.perf_counter()
            for _ in range(inner):
                s()
            sync(device)
            samples[i].append((time.perf_counter() - t0) / inner)
    return [statistics.median(v) for v in samples]


def run(args):
    device = torch.device(args.device)
    torch.manual_seed(0)
    rows = []
    cases = QUICK_CASES if args.quick else CASES
    repeats = args.repeats or (3 if args.quick else 7)
    for name, T, B, I, H, kw in cases:
        torch.manual_seed(0)
        ref = torch.nn.LSTM(I, H, **kw).to(device)
        ours = torchlstm.LSTM(I, H, **kw).to(device)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(T, B, I, device=device, requires_grad=True)
        for mode in ("inference", "forward+backward"):
            t_ref, t_ours = time_alternating(
                [make_step(ref, x, mode), make_step(ours, x, mode)], repeats, device)
            rows.append(dict(case=name, T=T, B=B, I=I, H=H, **kw, mode=mode,
                             nn_lstm_ms=t_ref * 1e3, torchlstm_ms=t_ours * 1e3,
                             ratio=t_ref / t_ours))
            r = rows[-1]
            print(f"  {name:17s} {mode:17s} nn.LSTM {r['nn_lstm_ms']:8.2f} ms   "
                  f"torchlstm {r['torchlstm_ms']:8.2f} ms   ratio {r['ratio']:5.2f}",
                  file=sys.stderr, flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--repeats", type=int, default=0, help="timed samples per contender")
    p.add_argument("--json", default="", help="also write all figures to this file")
    args = p.parse_args()
    backend = "cuDNN" if args.device.startswith("cuda") else "oneDNN"
    print(f"torchlstm benchmark: torch {torch.__version__}, device {args.device}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}",
          file=sys.stderr)
    rows = run(args)
    head = (f"| case | T | B | I | H | mode | nn.LSTM ({backend}) ms | torchlstm ms | ratio |\n"
            "|---|---|---|---|---|---|---|---|---|")
    print("\n" + head)
    for r in rows:
        print(f"| {r['case']} | {r['T']} | {r['B']} | {r['I']} | {r['H']} | {r['mode']} | "
              f"{r['nn_lstm_ms']:.2f} | {r['torchlstm_ms']:.2f} | {r['ratio']:.2f} |")
    print("\nratio = nn.LSTM time / torchlstm time (medians of alternating repeats; >1: "
          "torchlstm faster)")
    if args.json:
        meta = dict(torch=torch.__version__, device=args.device, threads=torch.get_num_threads(),
                    machine=platform.machine(), date=datetime.datetime.now().isoformat())
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
