"""The microbenchmark (the README's main job): torchlstm.LSTM beside torch.nn.LSTM (oneDNN
on CPU, cuDNN on GPU), the eager per-step loop people write for custom activations, and
torch.compile of that loop's step — in one process, timed samples alternated between the
contenders, medians reported, with ratios.

    python bench/bench.py [--quick] [--device cpu|cuda] [--dtype float32 bfloat16 ...]
                          [--repeats N] [--no-compile] [--out DIR] [--no-keras | --keras-only]
                          [--rss-calls N] [--cases NAME,...] [--no-equal-allocator]

The Keras rows (on by default in a full CPU run; --no-keras leaves them out, --keras-only
runs them alone): model.fit and model.predict of a Keras 3 model (torch backend) with
torchlstm.keras.LSTM beside the same model with keras.layers.LSTM, ms per batch (KERAS_CASE).

On CUDA the sizes are the GPU ones (GPU_CASES) in each --dtype (default float32 and
bfloat16), and each row says which CUDA forward path torchlstm took (persistent or GEMM).

ratio vs X = X's time / torchlstm's time: above 1 means torchlstm is faster.
GFLOP/s counts the LSTM's matrix products: forward 8·H·(I+H)·B·T (plus 2·P·H·B·T with a
projection); forward+backward 3× that. "of FMA peak" divides by this machine's physical
peak for the threads used, measured in the same run by a tight FMA loop per ISA (the
roofline's ceiling; CPU); "of GEMM peak" by a large torch.mm (the best the library does). Memory: bytes the forward saves for backward (the part of
training memory that differs between implementations), torchlstm / nn.LSTM.
Writes DIR/results.json (all figures, machine, versions, date) and DIR/ratios.png.

The cell variants' rows (issue 16: "peephole" and "layer_norm" in the full run,
"peephole small" and "layer_norm small" in --quick): torchlstm with the variant beside the plain torchlstm.LSTM of the same sizes
("torchlstm plain") and the eager loop of the same variant (nn.LSTM has no variants),
printed again in a table of their own with "variant / plain" = variant time / plain time
(the JSON's ratio["torchlstm plain"] is its inverse, as every ratio there).
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
from torch.utils.benchmark import Timer
from tqdm import tqdm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import torchlstm  # noqa: E402
from baselines import LoopLSTM  # noqa: E402

# name, T, B, I, H, torchlstm.LSTM keyword arguments
CASES = [
    ("headline", 100, 32, 128, 256, {}),
    ("latency B=1", 100, 1, 128, 128, {}),
    ("fastrnns default", 100, 64, 512, 512, {}),
    ("T=50 B=64 H=512", 50, 64, 256, 512, {}),
    ("proj_size=128", 100, 32, 128, 256, {"proj_size": 128}),
    ("hard_sigmoid", 100, 32, 128, 256, {"recurrent_activation": "hard_sigmoid"}),
    ("2 layers bidirectional", 50, 16, 256, 256, {"num_layers": 2, "bidirectional": True}),
    # a PackedSequence of B sequences of random lengths 20..T (seeded), for both models
    ("PackedSequence", 200, 32, 128, 256, {"packed": True}),
]
# the options torch.nn.LSTM has too (it runs a case whose options are all among these)
NN_OPTIONS = ("proj_size", "num_layers", "bidirectional")
QUICK_CASES = [
    ("headline", 100, 32, 128, 256, {}),
    ("hard_sigmoid small", 20, 4, 32, 64, {"recurrent_activation": "hard_sigmoid"}),
]
# The GPU sizes: pytorch's fastrnns default, a long small-batch sequence, and small batches
# where the persistent kernel applies (issue 3).
GPU_CASES = [
    ("T=100 B=64 H=512", 100, 64, 512, 512, {}),
    ("T=1024 B=16 H=768", 1024, 16, 768, 768, {}),
    ("T=100 B=1 H=256", 100, 1, 256, 256, {}),
    ("T=100 B=4 H=256", 100, 4, 256, 256, {}),
    ("T=100 B=16 H=256", 100, 16, 256, 256, {}),
    ("B=16 H=256 hard_sigmoid", 100, 16, 256, 256, {"recurrent_activation": "hard_sigmoid"}),
]
GPU_QUICK_CASES = [("T=100 B=16 H=256", 100, 16, 256, 256, {})]
MODES = ("inference", "forward+backward")
# The Keras rows: keras.Sequential([Input((T, I)), LSTM(H), Dense(1)]), batches of B
KERAS_CASE = ("headline", 100, 32, 128, 256)
# The cell variants (issue 16): options nn.LSTM lacks; their rows add the plain
# torchlstm.LSTM of the same sizes as a contender
VARIANT_OPTIONS = ("peephole", "layer_norm")
CASES = CASES + [("peephole", 100, 32, 128, 256, {"peephole": True}),
                 ("layer_norm", 100, 32, 128, 256, {"layer_norm": True})]
QUICK_CASES = QUICK_CASES + [("peephole small", 20, 4, 32, 64, {"peephole": True}),
                             ("layer_norm small", 20, 4, 32, 64, {"layer_norm": True})]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def flops(T, B, I, H, P, mode, num_layers=1, bidirectional=False, steps=None):
    """The matrix products' FLOPs; `steps` = the (t, b) pairs computed (T*B, or the sum
    of a PackedSequence's lengths)."""
    rows = steps if steps is not None else T * B
    dirs = 2 if bidirectional else 1
    fwd = 0
    for layer in range(num_layers):
        inp = I if layer == 0 else dirs * (P or H)
        fwd += dirs * (8 * H * (inp + (P or H)) * rows + (2 * P * H * rows if P else 0))
    return fwd if mode == "inference" else 3 * fwd


def packed_input(T, B, I, device, dtype):
    """B sequences of seeded random lengths 20..T, as a PackedSequence (unsorted)."""
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(20, T + 1, (B,), generator=g)
    x = torch.randn(T, B, I, generator=g).to(device, dtype)
    return torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False), lengths


def gemm_peak(device, dtype=torch.float32):
    """GFLOP/s of a large square matrix product: the machine's practical ceiling."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    m = Timer("torch.mm(a, b)", globals={"torch": torch, "a": a, "b": b},
              num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=1.0)
    return 2 * n ** 3 / m.median / 1e9


def fma_peak(dtype=torch.float32):
    """This machine's physical float32/float64 peak for the threads the benchmark uses: a
    tight FMA loop in C++ per ISA (csrc/cpu/fma_peak.cpp), the best ISA the CPU has.
    Returns (GFLOP/s, {isa: GFLOP/s}). float64 has half the lanes; float16/bfloat16 run in
    float32 on the CPU."""
    n = torch.get_num_threads()
    per_isa = {}
    for isa in ("avx2", "avx512"):
        try:
            per_isa[isa] = torchlstm._C.cpu_fma_peak(isa, n, 0.6)
        except ValueError:  # the CPU lacks it
            pass
    if not per_isa:
        return None, per_isa
    best = max(per_isa.values())
    return (best / 2 if dtype == torch.float64 else best), per_isa


def make_step(model, x, mode):
    if mode == "inference":
        def step():
            with torch.no_grad():
                model(x)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        packed = isinstance(x, torch.nn.utils.rnn.PackedSequence)
        leaf = x.data if packed else x

        def step():
            out, (h, c) = model(x)
            out = out.data if packed else out
            torch.autograd.grad(out.sum() + h.sum() + c.sum(), [leaf] + params)
    return step


def saved_bytes(model, x):
    """Bytes of the distinct storages the forward pass saves for backward."""
    storages = {}

    def pack(t):
        try:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, (h, c) = model(x)
    del out, h, c
    return sum(storages.values())


def time_alternating(steps, repeats, min_time):
    """Median seconds per call of each step. Samples alternate between the contenders so
    that noise on a shared machine hits all of them alike."""
    # Timer defaults to ONE thread: time with the threads the process really uses
    timers = [Timer("f()", globals={"f": f}, num_threads=torch.get_num_threads()) for f in steps]
    inner = []
    for t in timers:  # warm-up, and calls per sample so a sample lasts >= min_time
        t.timeit(2)
        once = max(t.timeit(1).mean, 1e-6)
        inner.append(max(1, int(min_time / once)))
    samples = [[] for _ in steps]
    for _ in range(repeats):
        for i, t in enumerate(timers):
            samples[i].append(t.timeit(inner[i]).mean)
    return [statistics.median(s) for s in samples]


def faults_per_call(step, calls=5):
    """Minor page faults per call of step (CPU): pages the kernel had to map (and zero)
    afresh because the memory was handed back to the OS since the last call. They cost
    kernel time inside the measured calls; see bench/RESULTS.md."""
    import resource
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def cuda_path_of(model, x):
    """Which CUDA forward path torchlstm takes for x ("" on the CPU)."""
    if (x.data if isinstance(x, torch.nn.utils.rnn.PackedSequence) else x).device.type != "cuda":
        return ""
    with torch.no_grad():
        model(x)
    torch.cuda.synchronize()
    return torchlstm._C.last_cuda_forward_path()


def run_cases(args, device, peaks):
    rows = []
    if device.type == "cuda":
        cases = GPU_QUICK_CASES if args.quick else GPU_CASES
    else:
        cases = QUICK_CASES if args.quick else CASES
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",")]
        known = {c[0] for c in CASES + QUICK_CASES + GPU_CASES}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise SystemExit(f"--cases: unknown {unknown}; known: {sorted(known)}")
        cases = [c for c in CASES + QUICK_CASES + GPU_CASES if c[0] in wanted
                 and (c in GPU_CASES) == (device.type == "cuda")]
    dtypes = args.dtype
    repeats = args.repeats or (3 if args.quick else 7)
    min_time = 0.02 if args.quick else 0.1
    bar = tqdm(total=len(cases) * len(MODES) * len(dtypes), desc="benchmark", unit="case",
               file=sys.stderr)
    for (name, T, B, I, H, kw), dtype_name in ((c, d) for c in cases for d in dtypes):
        dtype = getattr(torch, dtype_name)
        peak = peaks[dtype_name]  # {"fma": physical (CPU) or None, "gemm": library GEMM}
        torch.manual_seed(0)
        kw = dict(kw)
        packed = kw.pop("packed", False)
        ours = torchlstm.LSTM(I, H, **kw).to(device, dtype)
        if packed:
            x, lengths = packed_input(T, B, I, device, dtype)
            x.data.requires_grad_()
            steps_tb = int(lengths.sum())
        else:
            x = torch.randn(T, B, I, device=device, dtype=dtype, requires_grad=True)
            steps_tb = T * B
        path = cuda_path_of(ours, x)
        contenders = {"torchlstm": ours}
        nn_kw = {k: v for k, v in kw.items() if k in NN_OPTIONS}
        if len(nn_kw) == len(kw):  # nn.LSTM computes this case
            ref = torch.nn.LSTM(I, H, **nn_kw).to(device, dtype)
            ref.load_state_dict(ours.state_dict())
            contenders["nn.LSTM"] = ref
        contenders["eager loop"] = LoopLSTM(ours)
        if not args.no_compile:
            contenders["compiled loop"] = LoopLSTM(ours, compile_step=True)
        if any(k in VARIANT_OPTIONS for k in kw):  # the same LSTM without the variant
            torch.manual_seed(0)
            contenders["torchlstm plain"] = torchlstm.LSTM(
                I, H, **{k: v for k, v in kw.items() if k not in VARIANT_OPTIONS}).to(device, dtype)
        mem = {}
        for label in ("torchlstm", "nn.LSTM"):
            if label in contenders:
                mem[label] = saved_bytes(contenders[label], x)
        for mode in MODES:
            bar.set_postfix_str(f"{name} / {mode}")
            labels, steps = [], []
            for label, model in contenders.items():
                step = make_step(model, x, mode)
                try:
                    step()  # compiles the compiled loop; a contender that fails is left out
                except Exception as e:  # noqa: BLE001
                    tqdm.write(f"  {label} skipped for {name}/{mode}: {type(e).__name__}: {e}",
                               file=sys.stderr)
                    continue
                labels.append(label)
                steps.append(step)
            times = dict(zip(labels, time_alternating(steps, repeats, min_time)))
            fl = flops(T, B, I, H, kw.get("proj_size", 0), mode, kw.get("num_layers", 1),
                       kw.get("bidirectional", False), steps_tb)
            ours_t = times["torchlstm"]
            row = dict(case=name, T=T, B=B, I=I, H=H, options=dict(kw, packed=packed) if packed
                       else kw, mode=mode, dtype=dtype_name,
                       cuda_path=path,
                       ms={k: v * 1e3 for k, v in times.items()},
                       ratio={k: v / ours_t for k, v in times.items() if k != "torchlstm"},
                       gflops=fl / ours_t / 1e9,
                       of_peak=fl / ours_t / 1e9 / peak["fma"] if peak["fma"] else None,
                       of_gemm_peak=fl / ours_t / 1e9 / peak["gemm"])
            if device.type == "cpu":
                row["page_faults_per_call"] = {
                    k: faults_per_call(f) for k, f in zip(labels, steps)
                    if k in ("torchlstm", "nn.LSTM")}
            if mode == "forward+backward" and "nn.LSTM" in mem:
                row["memory_vs_nn"] = mem["torchlstm"] / mem["nn.LSTM"]
            row["saved_mb"] = {k: v / 2 ** 20 for k, v in mem.items()}
            rows.append(row)
            bar.update(1)
    bar.close()
    return rows


def glibc_trim_off():
    """glibc keeps freed memory instead of handing it back to the OS (M_TRIM_THRESHOLD
    off) and serves blocks up to 32 MiB from its heap (M_MMAP_THRESHOLD at its maximum),
    for the whole process from now on: then neither contender page-faults its buffers in
    afresh on every call (torchlstm's own buffer cache does that already, nn.LSTM's
    buffers otherwise come fresh from the OS). False where this is not glibc."""
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1)
                    and libc.mallopt(M_MMAP_THRESHOLD, 32 * 2 ** 20))
    except (OSError, AttributeError):
        return False


def run_equal_allocator(args, rows):
    """The nn.LSTM rows again with glibc's trimming off for both (glibc_trim_off): the
    "equal allocator terms" column, torchlstm vs nn.LSTM only, samples alternated."""
    if not glibc_trim_off():
        tqdm.write("  equal-allocator pass skipped: not glibc", file=sys.stderr)
        return
    todo = [r for r in rows if "nn.LSTM" in r["ms"]]
    repeats = args.repeats or (3 if args.quick else 7)
    min_time = 0.02 if args.quick else 0.1
    for r in tqdm(todo, desc="equal allocator", unit="case", file=sys.stderr):
        kw = dict(r["options"])
        packed = kw.pop("packed", False)
        dtype = getattr(torch, r["dtype"])
        torch.manual_seed(0)
        ours = torchlstm.LSTM(r["I"], r["H"], **kw).to(dtype=dtype)
        ref = torch.nn.LSTM(r["I"], r["H"], **kw).to(dtype=dtype)
        ref.load_state_dict(ours.state_dict())
        if packed:
            x, _ = packed_input(r["T"], r["B"], r["I"], torch.device("cpu"), dtype)
            x.data.requires_grad_()
        else:
            x = torch.randn(r["T"], r["B"], r["I"], dtype=dtype, requires_grad=True)
        steps = [make_step(m, x, r["mode"]) for m in (ours, ref)]
        t_ours, t_nn = time_alternating(steps, repeats, min_time)
        r["trim_off"] = dict(ms={"torchlstm": t_ours * 1e3, "nn.LSTM": t_nn * 1e3},
                             ratio=t_nn / t_ours,
                             page_faults_per_call={k: faults_per_call(f) for k, f in
                                                   zip(("torchlstm", "nn.LSTM"), steps)})


def run_keras(args, device):
    """ms per batch of model.fit (SGD, mse) and model.predict, torchlstm.keras.LSTM vs
    keras.layers.LSTM in the same model, samples alternated, medians."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    import numpy as np
    import torchlstm.keras as tk
    name, T, B, I, H = KERAS_CASE
    steps = 2 if args.quick else 5  # batches per timed fit / predict call
    repeats = args.repeats or (2 if args.quick else 5)
    rs = np.random.RandomState(0)
    x = rs.randn(steps * B, T, I).astype(np.float32)
    y = rs.randn(steps * B, 1).astype(np.float32)
    models = {}
    for label, lstm in (("torchlstm.keras.LSTM", tk.LSTM), ("keras.layers.LSTM", keras.layers.LSTM)):
        keras.utils.set_random_seed(0)
        m = keras.Sequential([keras.Input((T, I)), lstm(H), keras.layers.Dense(1)])
        m.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        models[label] = m
    rows = []
    for mode in ("fit", "predict"):
        def call(m):
            if mode == "fit":
                m.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
            else:
                m.predict(x, batch_size=B, verbose=0)
        for m in models.values():  # warm-up (and builds the train / predict functions)
            call(m)
        samples = {k: [] for k in models}
        for _ in range(repeats):
            for label, m in models.items():
                t0 = time.perf_counter()
                call(m)
                samples[label].append((time.perf_counter() - t0) / steps)
        ms = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
        rows.append(dict(case=name, T=T, B=B, I=I, H=H, mode=f"model.{mode}", ms=ms,
                         ratio=ms["keras.layers.LSTM"] / ms["torchlstm.keras.LSTM"],
                         keras=keras.__version__, device=str(device)))
    return rows


def keras_table(rows):
    lines = ["| Keras (torch backend) | mode | torchlstm.keras.LSTM ms/batch | "
             "keras.layers.LSTM ms/batch | vs keras.layers.LSTM |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} T={r['T']} B={r['B']} I={r['I']} H={r['H']} | {r['mode']} "
                     f"| {r['ms']['torchlstm.keras.LSTM']:.1f} | "
                     f"{r['ms']['keras.layers.LSTM']:.1f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def fmt_ratio(r, key):
    return f"{r['ratio'][key]:.2f}" if key in r["ratio"] else "n/a"


def table(rows, backend):
    gpu = any(r.get("cuda_path") for r in rows)
    dtypes = len({r.get("dtype") for r in rows}) > 1
    extra_h = (" dtype |" if gpu or dtypes else "") + (" path |" if gpu else "")
    extra_s = ("---|" if gpu or dtypes else "") + ("---|" if gpu else "")
    faults = any("page_faults_per_call" in r for r in rows)
    trim = any("trim_off" in r for r in rows)
    lines = [f"| case | mode |{extra_h} torchlstm ms | nn.LSTM ({backend}) ms | vs nn.LSTM | "
             + ("vs nn.LSTM, trim off |" if trim else "") +
             " vs eager loop | vs compiled loop | GFLOP/s | of FMA peak | of GEMM peak | "
             "memory vs nn.LSTM |" + (" page faults / call (torchlstm / nn.LSTM) |" if faults else ""),
             f"|---|---|{extra_s}---|---|---|" + ("---|" if trim else "") + "---|---|---|---|---|---|"
             + ("---|" if faults else "")]
    for r in rows:
        ms = r["ms"]
        mem = f"{r['memory_vs_nn']:.2f}" if "memory_vs_nn" in r else ""
        extra = (f" {r['dtype']} |" if gpu or dtypes else "") + (f" {r['cuda_path']} |" if gpu else "")
        nn_ms = f"{ms['nn.LSTM']:.2f}" if "nn.LSTM" in ms else "n/a"
        lines.append(f"| {r['case']} | {r['mode']} |{extra} {ms['torchlstm']:.2f} | {nn_ms} | ")
        lines[-1] += f"{fmt_ratio(r, 'nn.LSTM')} | "
        if trim:
            lines[-1] += (f"{r['trim_off']['ratio']:.2f} | " if "trim_off" in r else "n/a | ")
        lines[-1] += (f"{fmt_ratio(r, 'eager loop')} | "
                      f"{fmt_ratio(r, 'compiled loop')} | {r['gflops']:.1f} | "
                      + (f"{100 * r['of_peak']:.0f}%" if r.get("of_peak") else "n/a")
                      + f" | {100 * r['of_gemm_peak']:.0f}% | {mem} |")
        if faults:
            pf = r.get("page_faults_per_call", {})
            lines[-1] += " " + " / ".join(f"{pf[k]:.0f}" for k in ("torchlstm", "nn.LSTM")
                                          if k in pf) + " |"
    return "\n".join(lines)


def variant_table(rows):
    """The cell variants' rows: the variant against the plain torchlstm and its loop."""
    rows = [r for r in rows if "torchlstm plain" in r["ms"]]
    if not rows:
        return ""
    lines = ["| case | mode | variant ms | torchlstm plain ms | variant / plain | eager loop "
             "(same variant) ms | vs eager loop |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = r["ms"]
        lines.append(f"| {r['case']} | {r['mode']} | {ms['torchlstm']:.2f} | "
                     f"{ms['torchlstm plain']:.2f} | {ms['torchlstm'] / ms['torchlstm plain']:.2f}"
                     f" | {ms['eager loop']:.2f} | {fmt_ratio(r, 'eager loop')} |")
    return "\n".join(lines)


def chart(rows, path, backend):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    baselines = [b for b in ("nn.LSTM", "eager loop", "compiled loop")
                 if any(b in r["ratio"] for r in rows)]
    multi = len({r.get("dtype") for r in rows}) > 1
    labels = [f"{r['case']}\n{r['mode']}" + (f"\n{r['dtype']}" if multi else "") for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(rows)), 4.8))
    width = 0.8 / max(1, len(baselines))
    for k, b in enumerate(baselines):
        vals = [r["ratio"].get(b, 0.0) for r in rows]
        name = f"vs {b} ({backend})" if b == "nn.LSTM" else f"vs {b}"
        ax.bar([i + k * width for i in range(len(rows))], vals, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("speed-up of torchlstm (baseline time / torchlstm time)")
    ax.set_xticks([i + width * (len(baselines) - 1) / 2 for i in range(len(rows))])
    ax.set_xticklabels(labels, fontsize=7)
    ax.legend(fontsize=8)
    ax.set_title("torchlstm speed-up (medians, same run)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def rss_report(calls: int) -> dict:
    """Resident memory over `calls` forward+backward calls of torchlstm at the headline
    size after a warm-up (the buffer cache and the allocators settle in it): growth in MiB
    (the reliability target: under 1), and what torchlstm.empty_cache() hands back."""
    torch.manual_seed(0)
    m = torchlstm.LSTM(128, 256)
    x = torch.randn(100, 32, 128, requires_grad=True)

    def step():
        out, (h, c) = m(x)
        (out.sum() + c.sum()).backward()
    for _ in range(min(100, calls)):
        step()
    before = rss_mib()
    for _ in tqdm(range(calls), desc="resident memory", leave=False):
        step()
    after = rss_mib()
    freed = torchlstm.empty_cache() / 2 ** 20
    return dict(calls=calls, rss_before_mib=round(before, 2), rss_after_mib=round(after, 2),
                growth_mib=round(after - before, 3), empty_cache_freed_mib=round(freed, 2),
                rss_after_empty_cache_mib=round(rss_mib(), 2))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", nargs="+", default=None,
                   help="dtypes to run (default: float32 on CPU; float32 bfloat16 on CUDA)")
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--repeats", type=int, default=0, help="timed samples per contender")
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled loop")
    p.add_argument("--out", default=os.path.join(HERE, "out"), help="where JSON and PNG go")
    p.add_argument("--keras", action=argparse.BooleanOptionalAction, default=None,
                   help="the Keras rows (model.fit / predict, torchlstm.keras.LSTM vs "
                   "keras.layers.LSTM; default: on in a full CPU run where keras is installed)")
    p.add_argument("--keras-only", action="store_true", help="run the Keras rows alone")
    p.add_argument("--rss-calls", type=int, default=None,
                   help="forward+backward calls at the headline size for the resident-memory "
                   "report (CPU; default 2000, 50 with --quick, 0: none)")
    p.add_argument("--equal-allocator", action=argparse.BooleanOptionalAction, default=True,
                   help="the nn.LSTM rows again with glibc's trimming off for both (CPU; "
                   "the 'trim off' column; default on)")
    p.add_argument("--cases", default=None,
                   help="comma-separated case names to run (default: all of the run's cases)")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.keras is None:
        import importlib.util
        args.keras = (device.type == "cpu" and not args.quick
                      and importlib.util.find_spec("keras") is not None)
    if args.dtype is None:
        args.dtype = ["float32", "bfloat16"] if device.type == "cuda" else ["float32"]
    for d in args.dtype:
        if not isinstance(getattr(torch, d, None), torch.dtype):
            p.error(f"--dtype: unknown dtype {d!r}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32, both sides
        torch.backends.cudnn.allow_tf32 = False
    if args.keras_only:
        keras_rows = run_keras(args, device)
        print("\n" + keras_table(keras_rows))
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "keras_results.json"), "w") as f:
            json.dump(dict(torch=torch.__version__, threads=torch.get_num_threads(),
                           hardware=cpu_model() if device.type == "cpu" else
                           torch.cuda.get_device_name(device), rows=keras_rows), f, indent=1)
        return
    backend = "cuDNN" if device.type == "cuda" else "oneDNN"
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"torchlstm benchmark: torch {torch.__version__}, {hw}, "
          f"{torch.get_num_threads()} threads", file=sys.stderr)
    peaks, fma_isas = {}, {}
    for d in args.dtype:
        dt = getattr(torch, d)
        fma, fma_isas = fma_peak(dt) if device.type == "cpu" else (None, {})
        peaks[d] = {"fma": fma, "gemm": gemm_peak(device, dt)}
    print("peaks: " + ", ".join(
        f"{d}: FMA {v['fma']:.0f} GFLOP/s, GEMM {v['gemm']:.0f} GFLOP/s" if v["fma"] else
        f"{d}: GEMM {v['gemm']:.0f} GFLOP/s" for d, v in peaks.items())
        + (f" (FMA loop per ISA: {', '.join(f'{k} {v:.0f}' for k, v in fma_isas.items())})"
           if fma_isas else ""), file=sys.stderr)
    rows = run_cases(args, device, peaks)
    keras_rows = run_keras(args, device) if args.keras else []
    rss_calls = args.rss_calls if args.rss_calls is not None else (50 if args.quick else 2000)
    rss = rss_report(rss_calls) if device.type == "cpu" and rss_calls > 0 else None
    if device.type == "cpu" and args.equal_allocator:
        run_equal_allocator(args, rows)  # last: it changes glibc's settings for good
    print("\n" + table(rows, backend))
    if keras_rows:
        print("\n" + keras_table(keras_rows))
    print("\nratio = baseline time / torchlstm time (medians of alternating repeats; > 1: "
          "torchlstm faster).\nmemory = bytes saved for backward, torchlstm / nn.LSTM."
          + ("\npage faults / call: minor page faults per call, each contender on its own "
             "(fresh pages the kernel maps and zeroes inside the call)." if device.type == "cpu"
             else ""))
    if variant_table(rows):
        print("\ncell variants (issue 16):\n" + variant_table(rows))
    if rss:
        print(f"\nresident memory over {rss['calls']} forward+backward calls at the headline "
              f"size (after a warm-up): {rss['rss_before_mib']:.1f} -> {rss['rss_after_mib']:.1f} "
              f"MiB (growth {rss['growth_mib']:+.2f} MiB); torchlstm.empty_cache() freed "
              f"{rss['empty_cache_freed_mib']:.1f} MiB, resident after: "
              f"{rss['rss_after_empty_cache_mib']:.1f} MiB")
    os.makedirs(args.out, exist_ok=True)
    meta = dict(torch=torch.__version__, device=str(device), hardware=hw,
                threads=torch.get_num_threads(),
                gemm_peak_gflops={d: v["gemm"] for d, v in peaks.items()},
                fma_peak_gflops={d: v["fma"] for d, v in peaks.items()},
                fma_peak_per_isa_gflops=fma_isas,
                date=datetime.datetime.now().isoformat(timespec="seconds"),
                cpu_direct_blas=torchlstm._C.cpu_direct_blas(),
                cpu_packed_gemm=torchlstm._C.cpu_packed_gemm(),
                cpu_avx512=torchlstm._C.cpu_avx512(),
                cpu_gemm=torchlstm._C.cpu_gemm(), cpu_blas=torchlstm._C.cpu_blas(),
                cpu_cache_limit_mb=torchlstm._C.cpu_cache_stats()["limit_bytes"] / 2 ** 20,
                resident_memory=rss)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows, **({"keras_rows": keras_rows} if keras_rows
                                                 else {})), f, indent=1)
    chart(rows, os.path.join(args.out, "ratios.png"), backend)
    print(f"\nwrote {args.out}/results.json and {args.out}/ratios.png", file=sys.stderr)


if __name__ == "__main__":
    main()
