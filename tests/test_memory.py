"""Memory: no growth over many calls, and the CPU buffer cache handed back on request.

Measured in a fresh subprocess (the resident set of the pytest process carries whatever
other tests allocated), from /proc/self/statm, after gc.collect():

* 10,000 small forward+backward calls after a warm-up (and 3,000 LSTMCell steps): the
  resident set grows < 1 MiB;
* 100 calls at a size whose buffers go through the CPU buffer cache (>= 1 MiB each): the
  same bound (the cache reuses its blocks instead of growing);
* torchlstm.empty_cache() after calls at a larger size: returns what it freed, and the
  resident set comes back down by (nearly) that much.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import torchlstm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(torchlstm.__file__)))
MiB = 1 << 20

PRELUDE = r"""
import gc, json, os, sys, time
import torch, torchlstm
torch.set_num_threads(1)
PAGE = os.sysconf("SC_PAGE_SIZE")

def rss():
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE

def stepper(m, x):
    def step():
        out, (h, c) = m(x)
        (out.pow(2).sum() + h.sum() + c.sum()).backward()
    return step

def growth(step, warmup, calls):
    for _ in range(warmup):
        step()
    before = rss()
    t0 = time.monotonic()
    for _ in range(calls):
        step()
    return rss() - before, time.monotonic() - t0
"""

GROWTH = PRELUDE + r"""
torch.manual_seed(0)
small = torchlstm.LSTM(4, 8)
xs = torch.randn(3, 2, 4, requires_grad=True)
g_small, t_small = growth(stepper(small, xs), 500, 10000)
cell = torchlstm.LSTMCell(4, 8)
xc = torch.randn(2, 4, requires_grad=True)
def cell_step():
    h, c = cell(xc)
    (h.sum() + c.sum()).backward()
g_cell, t_cell = growth(cell_step, 500, 3000)
mid = torchlstm.LSTM(32, 128)  # gates (20, 32, 512) f32: 1.3 MB, from the cache
xm = torch.randn(20, 32, 32, requires_grad=True)
hits0 = torchlstm._C.cpu_cache_stats()["hits"]
g_mid, t_mid = growth(stepper(mid, xm), 20, 100)
hits = torchlstm._C.cpu_cache_stats()["hits"] - hits0
print(json.dumps(dict(small=g_small, t_small=t_small, cell=g_cell, t_cell=t_cell, mid=g_mid,
                      t_mid=t_mid, mid_cache_hits=hits)))
"""

EMPTY = PRELUDE + r"""
torch.manual_seed(0)
big = torchlstm.LSTM(64, 256)  # out 1.6 MB, gates 6.6 MB, ...: all from the cache
x = torch.randn(50, 32, 64, requires_grad=True)
step = stepper(big, x)
for _ in range(3):
    step()
held = torchlstm._C.cpu_cache_stats()["cached_bytes"]
before = rss()
freed = torchlstm.empty_cache()
after = rss()
left = torchlstm._C.cpu_cache_stats()
step()  # and it works afterwards, from a cold cache
print(json.dumps(dict(held=held, freed=freed, drop=before - after,
                      left_bytes=left["cached_bytes"], left_blocks=left["cached_blocks"])))
"""


def run(code: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def growth():
    return run(GROWTH)


@pytest.mark.parametrize("what", ["small", "cell", "mid"])
def test_resident_set_is_flat_over_many_calls(growth, what):
    calls = {"small": "10,000 small LSTM", "cell": "3,000 LSTMCell",
             "mid": "100 cache-sized LSTM"}[what]
    assert growth[what] < MiB, \
        f"{calls} forward+backward calls grew the resident set by " \
        f"{growth[what] / MiB:.2f} MiB (in {growth['t_' + what]:.1f} s)"


def test_cache_sized_calls_reuse_cached_blocks(growth):
    # the saved gates (forward) and their gradient (backward), 1.3 MB each, every call
    assert growth["mid_cache_hits"] >= 100 * 2


def test_empty_cache_hands_memory_back():
    r = run(EMPTY)
    assert r["held"] >= 8 * MiB, r  # the calls' buffers went through the cache
    assert r["freed"] == r["held"] and r["left_bytes"] == 0 and r["left_blocks"] == 0, r
    # freed blocks go back to the operating system, not just to malloc's free lists
    assert r["drop"] >= 0.75 * r["freed"], \
        f"empty_cache freed {r['freed'] / MiB:.1f} MiB but the resident set fell by only " \
        f"{r['drop'] / MiB:.1f} MiB"
