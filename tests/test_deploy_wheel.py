"""The wheel (issue 14): `python -m build` makes an sdist and, from it, a wheel; the wheel,
installed into a fresh directory (pip install --no-deps --target) and imported with the
torch of this environment, holds the compiled torchlstm._C with its CPU kernels (and the
CUDA ones where the build had CUDA), runs the ops, and has the package's version.

Building compiles the extension from scratch (from the sdist): several minutes, so this
runs only from `make wheel-test` (TORCHLSTM_WHEEL_TEST=1). TORCHLSTM_WHEEL=path tests an
already built wheel instead."""
import glob
import os
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    os.environ.get("TORCHLSTM_WHEEL_TEST", "0") in ("", "0") and not os.environ.get(
        "TORCHLSTM_WHEEL"), reason="slow (builds the extension): make wheel-test")


def build(tmp_path):
    if os.environ.get("TORCHLSTM_WHEEL"):
        return os.environ["TORCHLSTM_WHEEL"], None
    out = tmp_path / "dist"
    t = time.time()
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
                    ROOT], check=True, cwd=str(tmp_path))
    print(f"python -m build: {time.time() - t:.0f} s")
    sdists = glob.glob(str(out / "torchlstm-*.tar.gz"))
    wheels = glob.glob(str(out / "torchlstm-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, os.listdir(out)
    return wheels[0], sdists[0]


def test_wheel_installs_and_holds_the_kernels(tmp_path):
    wheel, sdist = build(tmp_path)
    if sdist is not None:
        import tarfile
        with tarfile.open(sdist) as tf:
            names = tf.getnames()
        for needed in ("csrc/ops.h", "csrc/gate_math.h", "csrc/cpu/ops_cpu.cpp", "setup.py",
                       "pyproject.toml", "torchlstm/_ops.py"):
            assert any(n.endswith(needed) for n in names), needed
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile",
                    "--target", str(target), wheel], check=True)
    code = textwrap.dedent(f"""
        import importlib.metadata, os, torch, torchlstm
        assert torchlstm.__file__.startswith({str(target)!r}), torchlstm.__file__
        assert os.path.dirname(torchlstm._C.__file__) == os.path.dirname(torchlstm.__file__)
        assert torchlstm.__version__ == importlib.metadata.version("torchlstm")
        has = torch._C._dispatch_has_kernel_for_dispatch_key
        for op in ("layer_forward", "layer_inference", "layer_backward"):
            assert has("torchlstm::" + op, "CPU"), op
        cuda = has("torchlstm::layer_forward", "CUDA")
        m = torchlstm.LSTM(3, 4, num_layers=2).double()
        x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
        ref = torch.nn.LSTM(3, 4, num_layers=2).double()
        ref.load_state_dict(m.state_dict())
        torch.testing.assert_close(m(x)[0], ref(x)[0])
        m(x)[0].sum().backward()
        if cuda and torch.cuda.is_available():
            mc, xc = m.cuda(), x.detach().cuda()
            torch.testing.assert_close(mc(xc)[0].cpu(), ref(x)[0], atol=1e-9, rtol=1e-9)
        print("version", torchlstm.__version__, "cuda kernels", cuda)
    """)
    env = dict(os.environ, PYTHONPATH=str(target))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-4000:]
    print(r.stdout)
    if os.environ.get("TORCHLSTM_WHEEL_EXPECT_CUDA", "0") not in ("", "0"):
        assert "cuda kernels True" in r.stdout
