#!/usr/bin/env python3
"""Fits the polynomial coefficients of the vector erf in tensor/kernels/activation_rows_impl.h.

  erf(z)  = z * P(z^2)            for 0 <= z < 1, P of degree 6
  erfc(z) = exp(-z^2) * Q(t)      for z >= 1, t = 1 / (1 + z), Q of degree 9 (Q ~ erfcx(z))

Both are least-squares fits of the relative error on a dense grid (double precision), printed as
float literals. The kernels' measured max error (tests/test_fused.cpp, VectorMath.*) is the check
that matters; this script only documents where the numbers came from.

  /usr/bin/python3 scripts/fit_erf_coefficients.py     (needs numpy and scipy)
"""
import numpy as np
from scipy.special import erf, erfcx


def relative_fit(basis, target):
    coeffs, *_ = np.linalg.lstsq(basis / target[:, None], np.ones_like(target), rcond=None)
    return coeffs.astype(np.float32)


def main():
    z = np.linspace(1e-6, 1.0, 20001)
    p = relative_fit(np.vander(z * z, 7, increasing=True), erf(z) / z)
    z = np.linspace(1.0, 10.0, 40001)
    t = 1.0 / (1.0 + z)
    q = relative_fit(np.vander(t, 10, increasing=True), erfcx(z))
    print("P (z^2, lowest power first):", ", ".join("%.9ef" % c for c in p))
    print("Q (t, lowest power first):  ", ", ".join("%.9ef" % c for c in q))


if __name__ == "__main__":
    main()
