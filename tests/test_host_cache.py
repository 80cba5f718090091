"""The CPU buffer cache (csrc/cpu/host_cache.h): large buffers are reused across calls
instead of being page-faulted in afresh, and the tensors made from them are ordinary."""
import io
import os
import subprocess
import sys
import threading

import pytest
import torch

import torchlstm
from torchlstm import _C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20


def train_step(m, x):
    out, (h, c) = m(x)
    (out.sum() + h.sum() + c.sum()).backward()
    return out


def make():
    torch.manual_seed(0)
    # out (T,B,H) 1.6 MB and gates (T,B,4H) 6.6 MB: cached; the states (B,H) are not
    return torchlstm.LSTM(64, 256), torch.randn(50, 32, 64, requires_grad=True)


def test_training_loop_reuses_its_buffers():
    m, x = make()
    train_step(m, x)  # the first step allocates
    torchlstm.empty_cache()
    before = _C.cpu_cache_stats()
    train_step(m, x)  # allocates again (the cache was emptied) ...
    mid = _C.cpu_cache_stats()
    assert mid["misses"] > before["misses"]
    assert mid["cached_bytes"] >= 3 * MiB  # ... and its buffers came back when freed
    train_step(m, x)  # the same shapes: served from the cache
    after = _C.cpu_cache_stats()
    assert after["misses"] == mid["misses"]
    assert after["hits"] - mid["hits"] >= 4  # out, gates, cs, dgates at least


def test_empty_cache_frees_and_reports():
    m, x = make()
    train_step(m, x)
    held = _C.cpu_cache_stats()["cached_bytes"]
    assert held > 0
    assert torchlstm.empty_cache() == held
    s = _C.cpu_cache_stats()
    assert s["cached_bytes"] == 0 and s["cached_blocks"] == 0
    assert torchlstm.empty_cache() == 0


def test_cached_tensors_are_ordinary_tensors():
    m, x = make()
    with torch.no_grad():
        out, _ = m(x)
    assert out.numel() * out.element_size() >= MiB  # out came from the cache
    expected = out.clone()
    buf = io.BytesIO()
    torch.save(out, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.load(buf), expected, rtol=0, atol=0)
    out.resize_(out.numel() * 2)  # the storage grows through the same allocator
    torch.testing.assert_close(out[:expected.numel()].view_as(expected), expected, rtol=0,
                               atol=0)
    torch.testing.assert_close(torch.from_numpy(out.numpy().copy()[:expected.numel()]),
                               expected.flatten(), rtol=0, atol=0)
    out.share_memory_()
    torch.testing.assert_close(out[:expected.numel()].view_as(expected), expected, rtol=0,
                               atol=0)
    # freed on another thread: the block goes back to the cache safely
    torchlstm.empty_cache()
    with torch.no_grad():
        held = [m(x)[0] for _ in range(4)]
    t = threading.Thread(target=held.clear)
    t.start()
    t.join()
    assert _C.cpu_cache_stats()["cached_blocks"] >= 4


def run_with_env(code, **env):
    e = dict(os.environ, **env)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                          timeout=300)


STEP = """
import torch, torchlstm
from torchlstm import _C
torch.manual_seed(0)
m = torchlstm.LSTM(64, 256); x = torch.randn(50, 32, 64, requires_grad=True)
for _ in range(2):
    out, (h, c) = m(x); (out.sum() + h.sum() + c.sum()).backward()
ref = torch.nn.LSTM(64, 256); ref.load_state_dict(m.state_dict())
torch.testing.assert_close(out, ref(x)[0], rtol=1e-5, atol=1e-5)
s = _C.cpu_cache_stats()
print(s["cached_bytes"], s["hits"], s["misses"], s["limit_bytes"])
"""


def test_cache_off_with_zero_limit():
    r = run_with_env(STEP, TORCHLSTM_CPU_CACHE_MB="0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0", "0", "0"]


def test_limit_bounds_what_is_kept():
    r = run_with_env(STEP, TORCHLSTM_CPU_CACHE_MB="4")
    assert r.returncode == 0, r.stderr
    cached, hits, misses, limit = map(int, r.stdout.split())
    assert limit == 4 * MiB and 0 < cached <= 4 * MiB and misses > 0


@pytest.mark.parametrize("value", ["lots", "-1", "1.5"])
def test_bad_limit_is_a_clear_error(value):
    r = run_with_env(STEP, TORCHLSTM_CPU_CACHE_MB=value)
    assert r.returncode != 0
    assert "TORCHLSTM_CPU_CACHE_MB must be a whole number of MiB" in r.stderr
    assert value in r.stderr


def test_copy_on_write_clone_of_a_cached_tensor():
    m, x = make()
    with torch.no_grad():
        out, _ = m(x)
    assert out.numel() * out.element_size() >= MiB
    expected = out.clone()
    lazy = torch._lazy_clone(out)
    torch.testing.assert_close(lazy, expected, rtol=0, atol=0)
    lazy.add_(1)  # materialises the copy; out keeps its values
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(lazy, expected + 1, rtol=0, atol=0)


def test_a_new_shape_is_not_crowded_out_by_old_ones():
    """Over the limit, the blocks returned longest ago go first: after a few calls of other
    shapes, a loop of one shape still reuses its buffers every step."""
    code = """
import torch, torchlstm
from torchlstm import _C
torch.manual_seed(0)
m = torchlstm.LSTM(64, 256)
def step(T):
    x = torch.randn(T, 32, 64, requires_grad=True)
    out, (h, c) = m(x); (out.sum() + h.sum() + c.sum()).backward()
for T in (20, 140, 40, 120, 60, 80):
    step(T)
for _ in range(2):
    step(100)
before = _C.cpu_cache_stats()
for _ in range(4):
    step(100)
after = _C.cpu_cache_stats()
print(after["misses"] - before["misses"], after["hits"] - before["hits"])
"""
    # one T=100 step frees about 98 MiB at once (data 44, MKL packing buffers 55)
    r = run_with_env(code, TORCHLSTM_CPU_CACHE_MB="100")
    assert r.returncode == 0, r.stderr
    misses, hits = map(int, r.stdout.split())
    assert misses == 0 and hits >= 16


def test_a_shorter_sequence_reuses_a_longer_ones_buffers():
    torch.manual_seed(0)
    m = torchlstm.LSTM(64, 256)
    torchlstm.empty_cache()
    train_step(m, torch.randn(100, 32, 64, requires_grad=True))
    before = _C.cpu_cache_stats()
    train_step(m, torch.randn(90, 32, 64, requires_grad=True))  # 10% smaller buffers
    after = _C.cpu_cache_stats()
    assert after["misses"] == before["misses"] and after["hits"] > before["hits"]
    train_step(m, torch.randn(50, 32, 64, requires_grad=True))  # half: not worth a big block
    assert _C.cpu_cache_stats()["misses"] > after["misses"]
