#!/usr/bin/env python3
"""Checks (and can refit) the polynomial tables of native/src/cpu/act_smooth_math.h.

The CPU SiLU/sigmoid/GELU kernels evaluate two fitted polynomials whose coefficients are committed as
C tables; this script is where their accuracy claims can be re-derived from first principles:

  kExpC   e^r = 1 + r + r^2 q(r), q of degree 4, for r in [-ln2/2, ln2/2] (Cody-Waite reduced);
          claim: the relative error of 1 + e is below 3.2e-9 (before rounding).
  kQ      Q(u) = e^(u^2/2) erfc(u/sqrt 2) / 2 on the 32 intervals [k/2, k/2 + 1/2), each
          kQ[0][k] + kQ[1][k] + sum_j kQ[j+1][k] s^j with s = u - (k/2 + 1/4) (constant term a float
          pair); the last interval is also used (clamped) beyond u = 16; claim: relative fit error
          below 5.1e-9.

Usage (any Python 3 with numpy and mpmath; no network):
    python3 scripts/fit_act_smooth.py            # check the committed tables, exit 1 if a claim fails
    python3 scripts/fit_act_smooth.py --fit      # also refit both tables and print them as C

Checking: every coefficient is parsed from the header as the float32 it is, the polynomial is
evaluated in float64 (the fit error, separate from the float32 evaluation error that the native
accuracy sweep measures), and compared with mpmath at 40 digits on 1001 points per interval
(Chebyshev-spaced, ends included). Refitting: a relative-error least-squares fit on 4x-oversampled
Chebyshev nodes, then each coefficient rounded to float32 in turn (the constant term split into a
float hi/lo pair first) with the remaining ones refitted: a near-minimax table of the same form, not
necessarily bit-identical to the committed one (that was fitted by a minimax exchange).
"""
import argparse
import os
import re
import sys

import numpy as np
import mpmath as mp

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "native", "src", "cpu", "act_smooth_math.h")
mp.mp.dps = 40


def parse_tables(text):
    def floats(block):
        return [np.float32(float(v)) for v in re.findall(r"([-+]?\d\.\d+e[-+]\d+)f", block)]

    exp_block = re.search(r"kExpC\[5\]\s*=\s*\{(.*?)\};", text, re.S).group(1)
    q_block = re.search(r"kQ\[8\]\[32\]\s*=\s*\{(.*?)\n\};", text, re.S).group(1)
    exp_c = floats(exp_block)
    q = floats(q_block)
    assert len(exp_c) == 5, len(exp_c)
    assert len(q) == 8 * 32, len(q)
    return np.array(exp_c, dtype=np.float64), np.array(q, dtype=np.float64).reshape(8, 32)


def q_exact(u):
    u = mp.mpf(u)
    return mp.e ** (u * u / 2) * mp.erfc(u / mp.sqrt(2)) / 2


def cheb_points(a, b, n):
    k = np.arange(n)
    x = np.cos(np.pi * k / (n - 1))  # includes both ends
    return np.sort((a + b) / 2 + (b - a) / 2 * x)


def check_exp(exp_c):
    half = float(mp.log(2) / 2)
    r = cheb_points(-half, half, 2001)
    q = sum(exp_c[j] * r ** j for j in range(5))
    approx = 1 + r + r * r * q
    exact = np.array([float(mp.e ** mp.mpf(v)) for v in r])
    return float(np.max(np.abs(approx / exact - 1)))


def check_q(table):
    worst = []
    for k in range(32):
        a, b = k / 2, k / 2 + 0.5
        c = a + 0.25
        u = cheb_points(a, b, 1001)
        s = u - c
        poly = table[0, k] + table[1, k] + sum(table[j + 1, k] * s ** j for j in range(1, 7))
        exact = np.array([float(q_exact(v)) for v in u])
        worst.append(float(np.max(np.abs(poly / exact - 1))))
    return worst


def lsq_relative(x, y, degree, fixed):
    """Least squares of sum_j c_j x^j ~ y in relative error, with coefficients in `fixed` held."""
    A = np.vstack([x ** j for j in range(degree + 1)]).T / y[:, None]
    rhs = np.ones_like(y)
    free = [j for j in range(degree + 1) if j not in fixed]
    for j, v in fixed.items():
        rhs = rhs - A[:, j] * v
    sol, *_ = np.linalg.lstsq(A[:, free], rhs, rcond=None)
    c = np.zeros(degree + 1)
    for j, v in fixed.items():
        c[j] = v
    c[free] = sol
    return c


def round_one_by_one(x, y, degree, split_constant):
    fixed = {}
    c = lsq_relative(x, y, degree, fixed)
    hi_lo = None
    for j in range(degree + 1):
        if j == 0 and split_constant:
            hi = float(np.float32(c[0]))
            lo = float(np.float32(c[0] - hi))
            hi_lo = (hi, lo)
            fixed[0] = hi + lo
        else:
            fixed[j] = float(np.float32(c[j]))
        if j < degree:
            c = lsq_relative(x, y, degree, fixed)
    c = np.array([fixed[j] for j in range(degree + 1)])
    return c, hi_lo


def fit_q():
    table = np.zeros((8, 32))
    for k in range(32):
        a, b = k / 2, k / 2 + 0.5
        c = a + 0.25
        u = cheb_points(a, b, 4 * 64)
        y = np.array([float(q_exact(v)) for v in u])
        coef, (hi, lo) = round_one_by_one(u - c, y, 6, True)
        table[0, k], table[1, k] = hi, lo
        table[2:, k] = coef[1:]
    return table


def fit_exp():
    half = float(mp.log(2) / 2)
    r = cheb_points(-half, half, 257)
    r = r[np.abs(r) > 1e-6]
    # q(r) = (e^r - 1 - r) / r^2, fitted in the relative error of e^r
    exact = np.array([float(mp.e ** mp.mpf(v)) for v in r])
    target = np.array([float((mp.e ** mp.mpf(v) - 1 - mp.mpf(v)) / mp.mpf(v) ** 2) for v in r])
    weight = r * r / exact
    A = np.vstack([r ** j for j in range(5)]).T * weight[:, None]
    fixed = {}
    for j in range(5):
        free = [i for i in range(5) if i not in fixed]
        rhs = target * weight - sum(A[:, i] * v for i, v in fixed.items()) if fixed else target * weight
        sol, *_ = np.linalg.lstsq(A[:, free], rhs, rcond=None)
        fixed[free[0]] = float(np.float32(sol[0]))
    return np.array([fixed[j] for j in range(5)])


def c_table(name, rows):
    out = [f"constexpr float {name} = {{"]
    for title, row in rows:
        out.append(f"    {{  // {title}")
        for i in range(0, len(row), 4):
            out.append("     " + " ".join(f"{v:.9e}f," for v in row[i:i + 4]))
        out.append("    },")
    out.append("};")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit", action="store_true", help="refit both tables and print them as C")
    args = ap.parse_args()
    with open(HEADER) as f:
        exp_c, q = parse_tables(f.read())
    e_err = check_exp(exp_c)
    q_err = check_q(q)
    print(f"kExpC: max relative error of 1 + e over [-ln2/2, ln2/2]: {e_err:.3g} (claim < 3.2e-9)")
    print(f"kQ:    max relative fit error per interval: worst {max(q_err):.3g} at k = {int(np.argmax(q_err))} (claim < 5.1e-9)")
    ok = e_err < 3.2e-9 and max(q_err) < 5.1e-9
    if args.fit:
        fq = fit_q()
        fe = fit_exp()
        print(f"refit kExpC: {check_exp(fe):.3g}; refit kQ: worst {max(check_q(fq)):.3g}")
        print("constexpr float kExpC[5] = {" + ", ".join(f"{v:.10e}f" for v in fe) + "};")
        titles = ["s^0 (high part)", "s^0 (low part)"] + [f"s^{j}" for j in range(1, 7)]
        print(c_table("kQ[8][32]", list(zip(titles, fq))))
    print("ok" if ok else "FAILED: a committed table misses its claim")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
