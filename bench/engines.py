"""What each CPU GEMM engine buys: torchlstm.LSTM timed with every combination of the
time loops' GEMM (torchlstm._C.set_cpu_gemm: the own micro-kernels or BLAS) and the
backward's large GEMMs (set_cpu_blas: MKL or OpenBLAS), beside nn.LSTM, in ONE process,
samples alternated between all of them, medians (bench.py's timing).

    python bench/engines.py [--cases NAME,...] [--repeats 7] [--threads N]

Prints one table per mode; ratio = nn.LSTM time / torchlstm time."""
from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torchlstm  # noqa: E402
from bench import CASES, make_step, time_alternating  # noqa: E402
from torchlstm import _C  # noqa: E402


def engines():
    gemms = ["blas"] + _C.cpu_gemm_kernels()
    blases = ["mkl"] + (["openblas"] if _C.cpu_openblas_loaded() else [])
    return [(g, b) for g in gemms for b in blases]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cases", default="headline,latency B=1,fastrnns default,T=50 B=64 H=512")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    combos = engines()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    for name in args.cases.split(","):
        case = [c for c in CASES if c[0] == name][0]
        _, T, B, I, H, kw = case
        torch.manual_seed(0)
        ours = torchlstm.LSTM(I, H, **kw)
        ref = torch.nn.LSTM(I, H, **kw)
        ref.load_state_dict(ours.state_dict())
        x = torch.randn(T, B, I, requires_grad=True)
        for mode in ("inference", "forward+backward"):
            plain = make_step(ours, x, mode)

            def with_engine(gemm, blas, f=plain):
                def step():
                    g0, b0 = _C.set_cpu_gemm(gemm), _C.set_cpu_blas(blas)
                    try:
                        f()
                    finally:
                        _C.set_cpu_gemm(g0)
                        _C.set_cpu_blas(b0)
                return step
            steps = [with_engine(g, b) for g, b in combos] + [make_step(ref, x, mode)]
            times = time_alternating(steps, args.repeats, 0.1)
            nn_t = times[-1]
            print(f"\n{name}, {mode}: nn.LSTM {nn_t * 1e3:.2f} ms")
            print("| loop GEMM | large GEMMs | torchlstm ms | vs nn.LSTM |\n|---|---|---|---|")
            for (g, b), t in zip(combos, times):
                print(f"| {g} | {b} | {t * 1e3:.2f} | {nn_t / t:.2f} |")


if __name__ == "__main__":
    main()
