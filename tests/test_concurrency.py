"""Threads and processes: torchlstm called from several Python threads at once, and from
processes forked after it ran (the CPU buffer cache, csrc/cpu/host_cache.*, is shared
state; so are libgomp's thread pool and the kernels' thread teams).

* 4 threads calling forward/backward on the same module and on different modules, in
  training and under no_grad, give exactly the single-threaded results; a deadlock fails
  the test (threads joined with a timeout) instead of hanging it.
* os.fork() and multiprocessing "fork" after torchlstm ran in the parent, also while
  another parent thread is inside a call (holding the buffer cache), leave a child that
  (after torch.set_num_threads(1), as PyTorch asks of forked children) runs torchlstm
  forward+backward correctly and exits 0 within seconds; DataLoader workers (fork) that
  call torchlstm. These run in a driver subprocess so that a hang is killed and reported.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

import torchlstm

JOIN_TIMEOUT = float(os.environ.get("TORCHLSTM_THREAD_TIMEOUT", "120"))
CHILD_TIMEOUT = float(os.environ.get("TORCHLSTM_CHILD_TIMEOUT", "20"))  # seconds per child
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(torchlstm.__file__)))


# ----------------------------------------------------------------- threads
def run_in_threads(jobs, timeout=JOIN_TIMEOUT):
    """Runs each job (a callable) on its own thread, all started together; returns their
    results in order. A job's exception is raised here; a thread still running after
    ``timeout`` seconds fails the test as a deadlock (daemon threads: pytest can exit)."""
    results = [None] * len(jobs)
    errors = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def body(i):
        try:
            start.wait(timeout)
            results[i] = jobs[i]()
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors[i] = e
    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    alive = [i for i, t in enumerate(threads) if t.is_alive()]
    assert not alive, f"threads {alive} still running after {timeout} s: a deadlock"
    for e in errors:
        if e is not None:
            raise e
    return results


def make_lstm(kind: int) -> torchlstm.LSTM:
    """A few module shapes; kind 0 and 1 are large enough that their buffers (output,
    gates, cell states, gradients) go through the CPU buffer cache (>= 1 MiB)."""
    torch.manual_seed(100 + kind)
    return [lambda: torchlstm.LSTM(32, 128),  # gates (40, 16, 512) f32: 1.3 MB
            lambda: torchlstm.LSTM(16, 64, num_layers=2, bidirectional=True, proj_size=48),
            lambda: torchlstm.LSTM(8, 16, batch_first=True, dtype=torch.float64),
            lambda: torchlstm.LSTM(5, 7, num_layers=3)][kind]()


def make_input(kind: int, seed: int, requires_grad: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape, dtype = [((40, 16, 32), torch.float32), ((60, 40, 16), torch.float32),
                    ((8, 30, 8), torch.float64), ((9, 5, 5), torch.float32)][kind]
    return torch.randn(shape, generator=g, dtype=dtype).requires_grad_(requires_grad)


def train_step(m, x):
    """Output, final states and the gradients of the input and every parameter (autograd.grad:
    nothing accumulates into the shared .grad fields)."""
    out, (h, c) = m(x)
    loss = out.pow(2).sum() + (h * 0.5).sum() + c.sum()
    grads = torch.autograd.grad(loss, [x] + list(m.parameters()))
    return [out.detach(), h.detach(), c.detach()] + list(grads)


def infer_step(m, x):
    with torch.no_grad():
        out, (h, c) = m(x)
    return [out, h, c]


def assert_bitwise(actual, expected, what):
    assert len(actual) == len(expected), what
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape and torch.equal(a, e), \
            f"{what}: result {i} differs from the single-threaded one " \
            f"(max abs diff {(a.double() - e.double()).abs().max().item():.3g})"


def repeated(step, m, kind, seeds, requires_grad):
    return lambda: [step(m, make_input(kind, s, requires_grad)) for s in seeds]


N_THREADS, N_ITERS = 4, 3


@pytest.mark.parametrize("mode", ["train", "no_grad"])
def test_threads_share_one_module(mode):
    step, rg = (train_step, True) if mode == "train" else (infer_step, False)
    for kind in (0, 1):
        m = make_lstm(kind)
        seeds = [[1000 * t + i for i in range(N_ITERS)] for t in range(N_THREADS)]
        serial = [[step(m, make_input(kind, s, rg)) for s in ss] for ss in seeds]
        threaded = run_in_threads([repeated(step, m, kind, ss, rg) for ss in seeds])
        for t in range(N_THREADS):
            for i in range(N_ITERS):
                assert_bitwise(threaded[t][i], serial[t][i], f"module {kind} thread {t} call {i}")


def test_threads_share_one_module_same_input():
    """The same input from 4 threads at once: 4 identical answers, bitwise."""
    m = make_lstm(0)
    x = make_input(0, 7, True)
    expected = train_step(m, x)
    results = run_in_threads([lambda: [train_step(m, x) for _ in range(N_ITERS)]] * N_THREADS)
    for t, calls in enumerate(results):
        for i, r in enumerate(calls):
            assert_bitwise(r, expected, f"thread {t} call {i}")


def test_threads_on_different_modules_training_and_inference():
    """4 modules of different shapes and dtypes (different buffer sizes in the cache), two
    threads training and two inferring per round, everything at once."""
    modules = [make_lstm(k) for k in range(4)]
    plans = [(k, train_step if k % 2 == 0 else infer_step) for k in range(4)] + \
            [(k, infer_step if k % 2 == 0 else train_step) for k in range(4)]
    seeds = [[50 * j + i for i in range(N_ITERS)] for j in range(len(plans))]
    serial = [[step(modules[k], make_input(k, s, step is train_step)) for s in ss]
              for (k, step), ss in zip(plans, seeds)]
    threaded = run_in_threads([repeated(step, modules[k], k, ss, step is train_step)
                               for (k, step), ss in zip(plans, seeds)])
    for j, ((k, step), calls) in enumerate(zip(plans, threaded)):
        for i, r in enumerate(calls):
            assert_bitwise(r, serial[j][i], f"job {j} (module {k}, {step.__name__}) call {i}")


def test_threads_with_cells_and_empty_cache():
    """LSTMCell steps and torchlstm.empty_cache() racing with LSTM calls that use the cache."""
    m = make_lstm(0)
    torch.manual_seed(3)
    cell = torchlstm.LSTMCell(32, 128)
    x = make_input(0, 11, True)
    expected = train_step(m, x)

    def cell_job():
        out = []
        for i in range(20):
            xi = x[i % x.shape[0]].detach().requires_grad_()
            h, c = cell(xi)
            out.append(torch.autograd.grad(h.sum() + c.sum(), [xi] + list(cell.parameters())))
        return out
    expected_cell = cell_job()

    def emptier():
        freed = 0
        for _ in range(200):
            freed += torchlstm.empty_cache()
        return freed
    r = run_in_threads([lambda: [train_step(m, x) for _ in range(N_ITERS)], cell_job, emptier,
                        lambda: [train_step(m, x) for _ in range(N_ITERS)]])
    for calls in (r[0], r[3]):
        for c in calls:
            assert_bitwise(c, expected, "LSTM call racing with empty_cache")
    for a, e in zip(r[1], expected_cell):
        assert_bitwise(list(a), list(e), "LSTMCell step racing with LSTM calls")


# ----------------------------------------------------------------- processes
DRIVER_PRELUDE = r"""
import os, signal, sys, threading, time
import torch, torchlstm
CHILD_TIMEOUT = float(os.environ["CHILD_TIMEOUT"])

def model():
    torch.manual_seed(0)
    # large enough for the buffer cache (gates (20, 64, 512) f32: 2.6 MB)
    return torchlstm.LSTM(32, 128, num_layers=2)

def data(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(20, 64, 32, generator=g).requires_grad_()

def step(m, x):
    out, (h, c) = m(x)
    loss = out.pow(2).sum() + c.sum()
    gx, *gp = torch.autograd.grad(loss, [x] + list(m.parameters()))
    return [out.detach(), h.detach(), c.detach(), gx] + gp

def same(a, b):
    return len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b))

def child_work(m, expected):
    # what PyTorch asks of a forked child (libgomp cannot fork its thread pool)
    torch.set_num_threads(1)
    ok = True
    for _ in range(2):
        ok = ok and same(step(m, data(1)), expected)
    stats = torchlstm._C.cpu_cache_stats()  # walks the cache's state
    torchlstm.empty_cache()
    ok = ok and same(step(m, data(1)), expected)  # and again from an empty cache
    return ok

def wait_child(pid, what):
    deadline = time.monotonic() + CHILD_TIMEOUT
    t0 = time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                print(f"FAIL {what}: child exited with {code}", flush=True)
                sys.exit(1)
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print(f"FAIL {what}: child still running after {CHILD_TIMEOUT} s (hung); killed",
                  flush=True)
            sys.exit(1)
        time.sleep(0.01)

def fork_and_check(m, expected, what):
    pid = os.fork()
    if pid == 0:  # the child
        try:
            code = 0 if child_work(m, expected) else 3
        except BaseException as e:
            print(f"child error in {what}: {e!r}", flush=True)
            code = 4
        os._exit(code)
    return wait_child(pid, what)

m = model()
# The expected results at one thread, as the children run (float sums may round
# differently with another thread count); then the parent runs torchlstm with a thread
# team (libgomp's pool started) and fills the buffer cache.
torch.set_num_threads(1)
expected = step(m, data(1))
torch.set_num_threads(2)
step(m, data(1))
step(m, data(1))
"""

DRIVERS = {
    # fork after torchlstm ran, the parent idle
    "fork_after_use": r"""
t = fork_and_check(m, expected, "fork after use")
print(f"OK child took {t:.2f} s")
""",
    # fork while another parent thread is inside torchlstm calls (taking and returning
    # cache blocks, its thread team running): many forks, so some land mid-call
    "fork_while_a_thread_is_inside_a_call": r"""
stop = threading.Event()
calls = [0]
def busy():
    mb = model()
    while not stop.is_set():
        step(mb, data(2))
        calls[0] += 1
        torchlstm.empty_cache() if calls[0] % 7 == 0 else None
def emptier():  # holds the cache's lock while it frees blocks, over and over
    me = torchlstm.LSTM(32, 128)
    x = torch.randn(4, 256, 32)
    while not stop.is_set():
        with torch.no_grad():
            me(x)  # (4, 256, 128) f32 output: a cached block
        torchlstm.empty_cache()
bg = threading.Thread(target=busy, daemon=True)
bg.start()
bg2 = threading.Thread(target=emptier, daemon=True)
bg2.start()
while calls[0] == 0:
    time.sleep(0.001)
times = []
for i in range(int(os.environ.get("N_FORKS", "12"))):
    time.sleep(0.003 * (i % 5))  # land at different points of the busy thread's calls
    times.append(fork_and_check(m, expected, f"fork {i} with a busy parent thread"))
stop.set()
bg.join(60)
bg2.join(60)
assert not bg.is_alive() and not bg2.is_alive(), "the parent's busy threads hung"
torch.set_num_threads(1)
assert same(step(m, data(1)), expected), "the parent's results changed"
print(f"OK {len(times)} children, slowest {max(times):.2f} s, busy thread made {calls[0]} calls")
""",
    "multiprocessing_fork": r"""
import multiprocessing as mp
def target(q):
    q.put(child_work(m, expected))
ctx = mp.get_context("fork")
q = ctx.Queue()
procs = [ctx.Process(target=target, args=(q,)) for _ in range(2)]
t0 = time.monotonic()
for p in procs:
    p.start()
for p in procs:
    p.join(CHILD_TIMEOUT)
hung = [p.pid for p in procs if p.is_alive()]
for p in procs:
    if p.is_alive():
        p.kill()
if hung:
    print(f"FAIL multiprocessing fork: children {hung} hung; killed", flush=True)
    sys.exit(1)
codes = [p.exitcode for p in procs]
oks = [q.get(timeout=5) for _ in procs]
if codes != [0, 0] or oks != [True, True]:
    print(f"FAIL multiprocessing fork: exit codes {codes}, results equal {oks}", flush=True)
    sys.exit(1)
print(f"OK in {time.monotonic() - t0:.2f} s")
""",
    "dataloader_fork_workers": r"""
from torch.utils.data import DataLoader, Dataset
class Seqs(Dataset):
    def __init__(self):
        torch.manual_seed(5)
        self.m = torchlstm.LSTM(6, 10, bidirectional=True)
    def __len__(self):
        return 8
    def __getitem__(self, i):
        x = torch.randn(7, 6, generator=torch.Generator().manual_seed(i), requires_grad=True)
        out, (h, c) = self.m(x)  # unbatched, with autograd: forward and backward in the worker
        g, = torch.autograd.grad(out.sum(), x)
        return out.detach(), g
ds = Seqs()
ds[0]  # torchlstm runs in the parent first, with its thread team
torch.set_num_threads(1)  # the expected results at one thread, as the workers run
want = [ds[i] for i in range(len(ds))]
torch.set_num_threads(2)
dl = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork",
                timeout=CHILD_TIMEOUT)
got = list(dl)
assert len(got) == 4
for b, (out, g) in enumerate(got):
    for j in range(2):
        w_out, w_g = want[2 * b + j]
        assert torch.equal(out[j], w_out) and torch.equal(g[j], w_g), f"sample {2 * b + j}"
print("OK")
""",
}


@pytest.mark.parametrize("name", list(DRIVERS))
def test_processes(name):
    code = DRIVER_PRELUDE + textwrap.dedent(DRIVERS[name])
    env = dict(os.environ, CHILD_TIMEOUT=str(CHILD_TIMEOUT),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    budget = 60 + 15 * CHILD_TIMEOUT
    try:
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=budget)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        pytest.fail(f"{name}: the driver hung for {budget} s (killed); its output: {out!r}")
    assert r.returncode == 0 and r.stdout.startswith("OK"), \
        f"{name}: exit {r.returncode}\nstdout: {r.stdout[-3000:]}\nstderr: {r.stderr[-3000:]}"
