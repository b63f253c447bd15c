"""The 2-D map (densprune.cluster.layout): UMAP on the exact kNN graph, PCA for a handful of points, and
UMAP's numba kernels kept on disk so that a second process does not compile them again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from densprune.cluster.layout import MIN_UMAP_POINTS, pca_2d, umap_layout

ROOT = Path(__file__).resolve().parent.parent

LAYOUT_IN_A_PROCESS = """
import json
import numpy as np
import umap.layouts, umap.umap_, umap.utils
from numba.core.dispatcher import Dispatcher
from densprune.cluster.layout import umap_layout

kernels = [k for m in (umap.umap_, umap.layouts, umap.utils) for k in vars(m).values() if isinstance(k, Dispatcher)]
def count(what):
    return sum(sum(getattr(k.stats, what).values()) for k in kernels)
before = count("cache_hits"), count("cache_misses")  # umap compiles a few small kernels as it is imported
rng = np.random.default_rng(0)
x = rng.standard_normal((120, 16)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
xy, cxy = umap_layout(x, x[:3], np.arange(0, 120, 2), seed=7)
print(json.dumps({"xy": xy.tolist(), "cxy": cxy.tolist(), "hits": count("cache_hits") - before[0],
                  "misses": count("cache_misses") - before[1]}))
"""


def layout_in_a_fresh_process() -> dict:
    """Numba's own cache location, as a user's process has it (beside umap's source, or user-wide)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    proc = subprocess.run([sys.executable, "-c", LAYOUT_IN_A_PROCESS], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_compiled_umap_kernels_and_lays_out_the_same_map():
    first = layout_in_a_fresh_process()  # compiles what no earlier process cached
    second = layout_in_a_fresh_process()
    assert second["hits"] > 0 and second["misses"] == 0  # every kernel came from the cache, none compiled
    np.testing.assert_array_equal(np.array(second["xy"]), np.array(first["xy"]))
    np.testing.assert_array_equal(np.array(second["cxy"]), np.array(first["cxy"]))
    xy = np.array(first["xy"])
    assert xy.shape == (60, 2) and np.isfinite(xy).all() and xy.std(axis=0).min() > 0


def test_a_handful_of_points_is_laid_out_by_pca():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, 5)).astype(np.float32)
    rows = np.array([0, 3, 4])
    xy, cxy = umap_layout(x, x[:2], rows, seed=0)
    assert rows.size + 2 < MIN_UMAP_POINTS
    want = pca_2d(np.concatenate([x[rows], x[:2]]))
    np.testing.assert_allclose(np.concatenate([xy, cxy]), want, atol=1e-6)
    # PCA: the first coordinate has the largest spread and the coordinates are uncorrelated
    assert want[:, 0].var() >= want[:, 1].var()
    assert abs(np.corrcoef(want.T)[0, 1]) < 1e-5
