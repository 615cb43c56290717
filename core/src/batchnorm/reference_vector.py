#!/usr/bin/env python3
"""Independent reference values for the BN golden test in tests.rs.

Computes one training step of Batch Normalization (Ioffe & Szegedy 2015,
Alg. 1), its backward pass (the paper's chain rule, written out term by term
through d/dvar and d/dmu rather than the simplified form batchnorm.rs uses),
the running-statistics update (PyTorch semantics: momentum 0.1, running
variance from the UNBIASED batch variance m/(m-1)) and the inference output
(Alg. 2) with the updated running statistics.

Standard library only: every quantity is an exact `fractions.Fraction`
except the square root, taken with `decimal` at 50 significant digits and
converted back to a Fraction exactly. The results are therefore correct to
far more digits than are printed.

Run:  python3 core/src/batchnorm/reference_vector.py
and paste its output over the constants at the top of `golden_vector` in
tests.rs (then `cargo fmt`). The output starts with the inputs themselves as
f32 literals, so the test always runs on exactly the values used here.

Inputs are short decimals; x and dy are multiples of 1/16, hence exact in f32,
so the Rust side sees the same x and dy as this script. gamma, beta, eps and
momentum round to f32 with relative error <= 2^-24, which moves the outputs
by far less than the test's 1e-6 tolerance (no cancellation amplifies them).
"""

from decimal import Decimal, getcontext
from fractions import Fraction as F

getcontext().prec = 50

# 4 samples x 3 channels (dense BN, m = 4). Channel 2 sits at an offset of ~3
# with a small spread, the case a one-pass E[x^2] - E[x]^2 would degrade.
X = [
    ["0.5", "-1.25", "3.0"],
    ["1.5", "0.375", "2.875"],
    ["-0.75", "2.25", "3.0625"],
    ["2.125", "-0.5", "3.25"],
]
GAMMA = ["1.5", "-0.8", "0.25"]
BETA = ["0.1", "-0.3", "2.0"]
DY = [
    ["0.25", "-0.5", "1.0"],
    ["-1.0", "0.75", "0.125"],
    ["0.5", "0.25", "-0.625"],
    ["0.0625", "-1.5", "0.375"],
]
EPS_LIT = "1e-5"
MOMENTUM_LIT = "0.1"
EPS = F(EPS_LIT)
MOMENTUM = F(MOMENTUM_LIT)
RUNNING_MEAN0 = ["0", "0", "0"]  # PyTorch's initial running statistics
RUNNING_VAR0 = ["1", "1", "1"]


def frac_matrix(rows):
    return [[F(v) for v in r] for r in rows]


def sqrt(q):
    """Square root of a non-negative Fraction, 50 significant digits."""
    d = Decimal(q.numerator) / Decimal(q.denominator)
    return F(d.sqrt())


def main():
    x = frac_matrix(X)
    dy = frac_matrix(DY)
    gamma = [F(v) for v in GAMMA]
    beta = [F(v) for v in BETA]
    m = len(x)
    c = len(x[0])
    col = lambda a, j: [a[i][j] for i in range(m)]

    mean = [sum(col(x, j)) / m for j in range(c)]
    var = [sum((v - mean[j]) ** 2 for v in col(x, j)) / m for j in range(c)]
    std = [sqrt(var[j] + EPS) for j in range(c)]
    inv_std = [1 / s for s in std]
    xhat = [[(x[i][j] - mean[j]) * inv_std[j] for j in range(c)] for i in range(m)]
    y = [[gamma[j] * xhat[i][j] + beta[j] for j in range(c)] for i in range(m)]

    # Running statistics, unbiased variance.
    rmean = [(1 - MOMENTUM) * F(RUNNING_MEAN0[j]) + MOMENTUM * mean[j] for j in range(c)]
    rvar = [
        (1 - MOMENTUM) * F(RUNNING_VAR0[j]) + MOMENTUM * var[j] * m / (m - 1)
        for j in range(c)
    ]

    # Backward, the paper's chain rule term by term.
    dxhat = [[dy[i][j] * gamma[j] for j in range(c)] for i in range(m)]
    dvar = [
        sum(dxhat[i][j] * (x[i][j] - mean[j]) for i in range(m))
        * F(-1, 2)
        * inv_std[j] ** 3
        for j in range(c)
    ]
    dmu = [
        sum(dxhat[i][j] * -inv_std[j] for i in range(m))
        + dvar[j] * sum(-2 * (x[i][j] - mean[j]) for i in range(m)) / m
        for j in range(c)
    ]
    dx = [
        [
            dxhat[i][j] * inv_std[j]
            + dvar[j] * 2 * (x[i][j] - mean[j]) / m
            + dmu[j] / m
            for j in range(c)
        ]
        for i in range(m)
    ]
    dgamma = [sum(dy[i][j] * xhat[i][j] for i in range(m)) for j in range(c)]
    dbeta = [sum(col(dy, j)) for j in range(c)]

    # Inference (Alg. 2) with the updated running statistics, same x.
    eval_inv_std = [1 / sqrt(rvar[j] + EPS) for j in range(c)]
    y_eval = [
        [gamma[j] * (x[i][j] - rmean[j]) * eval_inv_std[j] + beta[j] for j in range(c)]
        for i in range(m)
    ]

    def lit(q):
        # 15 significant digits: exact enough for an f32 comparison and short
        # enough that the f64 literal is not "excessive precision".
        s = format(Decimal(q.numerator) / Decimal(q.denominator), ".14e")
        mant, exp = s.split("e")
        return f"{mant}e{int(exp)}"

    def arr(name, values):
        body = ", ".join(lit(v) for v in values)
        print(f"const {name}: [f64; {len(values)}] = [{body}];")

    flat = lambda a: [v for r in a for v in r]

    def f32_lit(v):
        # The script's own decimal strings, made float literals ("0" -> "0.0").
        return v if any(ch in v for ch in ".eE") else v + ".0"

    def inputs(name, values):
        body = ", ".join(f32_lit(v) for v in values)
        print(f"const {name}: [f32; {len(values)}] = [{body}];")

    print(f"// Generated by core/src/batchnorm/reference_vector.py (m = {m}, C = {c}).")
    inputs("X", flat(X))
    inputs("GAMMA", GAMMA)
    inputs("BETA", BETA)
    inputs("DY", flat(DY))
    inputs("RUNNING_MEAN0", RUNNING_MEAN0)
    inputs("RUNNING_VAR0", RUNNING_VAR0)
    print(f"const EPS: f32 = {f32_lit(EPS_LIT)};")
    print(f"const MOMENTUM: f32 = {f32_lit(MOMENTUM_LIT)};")
    arr("Y", flat(y))
    arr("SAVED_MEAN", mean)
    arr("SAVED_INV_STD", inv_std)
    arr("RUNNING_MEAN", rmean)
    arr("RUNNING_VAR", rvar)
    arr("DX", flat(dx))
    arr("DGAMMA", dgamma)
    arr("DBETA", dbeta)
    arr("Y_EVAL", flat(y_eval))


if __name__ == "__main__":
    main()
