#!/usr/bin/python3
# Writes tests/data/eval_golden.json: NumPy/SciPy reference values for the metrics of
# models/eval_metrics.h (tests/test_eval.cpp compares). Run once:
#   /usr/bin/python3 scripts/make_eval_golden.py
# The feature sets are stored in the file as float32 values, and every reference value is
# computed in float64 from exactly those values, so the C++ tests never need NumPy's RNG.
# The Fréchet distance uses scipy.linalg.sqrtm (the FID recipe), independently of the
# eigendecomposition route the C++ code takes.
import json
import os

import numpy as np
import scipy.linalg

rng = np.random.default_rng(20261201)
DIM = 6


def correlated(n, shift, scale):
    mixing = rng.normal(size=(DIM, DIM)) * scale
    return (rng.normal(size=(n, DIM)) @ mixing + shift).astype(np.float32)


real = correlated(40, 0.0, 1.0)
generated = correlated(50, 0.3, 0.7)
few = correlated(5, -0.2, 1.2)  # fewer points than dimensions: a singular covariance


def fit(x):
    x = x.astype(np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet(a, b):
    mu1, s1 = fit(a)
    mu2, s2 = fit(b)
    root, _ = scipy.linalg.sqrtm(s1 @ s2, disp=False)
    root = root.real  # rounding leaves a tiny imaginary part, as in every FID implementation
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


def pairwise(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))


def mean_pairwise(x):
    d = pairwise(x, x)
    n = len(x)
    return float(d[np.triu_indices(n, 1)].mean())


def kth_radii(x, k):
    d = pairwise(x, x)
    np.fill_diagonal(d, np.inf)  # a point is not its own neighbour
    return np.sort(d, axis=1)[:, k - 1]


def share_inside(manifold, points, k):
    radii = kth_radii(manifold, k)
    d = pairwise(points, manifold)
    return float((d <= radii[None, :]).any(axis=1).mean())


def rows(x):
    return {"count": int(x.shape[0]), "dim": int(x.shape[1]),
            "data": [float(v) for v in x.reshape(-1)]}


k = 3
golden = {
    "real": rows(real),
    "generated": rows(generated),
    "few": rows(few),
    "mean_pairwise_real": mean_pairwise(real),
    "diversity_generated_vs_real": mean_pairwise(generated) / mean_pairwise(real),
    "covariance_real": [float(v) for v in fit(real)[1].reshape(-1)],
    "eigenvalues_covariance_real": [float(v) for v in np.linalg.eigvalsh(fit(real)[1])],
    "fd_real_generated": frechet(real, generated),
    "fd_real_few": frechet(real, few),
    "fd_few_real": frechet(few, real),
    "k": k,
    "kth_radii_real": [float(v) for v in kth_radii(real, k)],
    "precision": share_inside(real, generated, k),
    "recall": share_inside(generated, real, k),
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                   "eval_golden.json")
with open(out, "w") as f:
    json.dump(golden, f, indent=1)
    f.write("\n")
print("wrote", os.path.normpath(out))
for key in ["mean_pairwise_real", "diversity_generated_vs_real", "fd_real_generated",
            "fd_real_few", "fd_few_real", "precision", "recall"]:
    print(f"  {key} = {golden[key]}")
