#!/usr/bin/env python3
"""Side-by-side training speed: normcore vs PyTorch (CPU), same networks,
same batch sizes, same thread counts, in one invocation.

Runs `normcore bench` (the binary given by --normcore, default
target/release/normcore) and then the same workloads through PyTorch, and
prints both columns and the ratio PyTorch time / normcore time (> 1 means
normcore is faster). Not part of CI: it needs torch (`python3 -c "import torch"`).

Workloads (as in `normcore bench`):
- paper-mlp: 784-100-100-100-10, dense without bias + BN + sigmoid per hidden
  layer, batch 60, SGD momentum 0.9; seconds per 1,000 steps.
- cnn: conv 5x5x16 valid (no bias), BN, ReLU, max pool 2; conv 5x5x32 valid
  (no bias), BN, ReLU, max pool 2; dense 10; batch 64, SGD momentum 0.9;
  seconds per 60,000-sample epoch (937.5 steps, timed on --cnn-steps).

Usage: python3 bench/pytorch/bench.py [--data-dir /work/shared/data/mnist]
       [--threads 1,2] [--repeats 3] [--mlp-steps 1000] [--cnn-steps 937]
"""
import argparse
import gzip
import os
import re
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn


def load_mnist(d):
    if d is None:
        return None
    try:
        with gzip.open(os.path.join(d, "train-images-idx3-ubyte.gz")) as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
        with gzip.open(os.path.join(d, "train-labels-idx1-ubyte.gz")) as f:
            y = np.frombuffer(f.read(), np.uint8, offset=8)
    except OSError:
        return None
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


def paper_mlp():
    layers = []
    n = 784
    for _ in range(3):
        layers += [nn.Linear(n, 100, bias=False), nn.BatchNorm1d(100), nn.Sigmoid()]
        n = 100
    return nn.Sequential(nn.Flatten(), *layers, nn.Linear(100, 10))


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )


def time_torch(make, batch, threads, steps, data):
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    x, y = data
    net = make()
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(1)
    total = steps + 20
    idx = torch.cat([torch.randperm(len(y), generator=g) for _ in range(total * batch // len(y) + 1)])

    def step(i):
        j = idx[i * batch:(i + 1) * batch]
        xb, yb = x[j], y[j]  # the gather is part of a step, as in normcore
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()

    for i in range(20):
        step(i)
    t0 = time.perf_counter()
    for i in range(20, total):
        step(i)
    return time.perf_counter() - t0


def run_normcore(a):
    cmd = [a.normcore, "bench", "--threads", a.threads, "--repeats", "1",
           "--mlp-steps", str(a.mlp_steps), "--cnn-steps", str(a.cnn_steps)]
    if a.data_dir:
        cmd += ["--data-dir", a.data_dir]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    sys.stdout.write(out)
    res = {}
    for m in re.finditer(r"\| (paper-mlp|paper-mlp-nobn|cnn), batch \d+ \| (\d+) \| [^|]* \| ([0-9.]+) s", out):
        res[(m.group(1), int(m.group(2)))] = float(m.group(3))
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--normcore", default=os.path.join(os.path.dirname(__file__), "../../target/release/normcore"))
    p.add_argument("--data-dir", default="/work/shared/data/mnist")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mlp-steps", type=int, default=1000)
    p.add_argument("--cnn-steps", type=int, default=937)
    a = p.parse_args()
    if a.repeats < 1 or a.mlp_steps < 1 or a.cnn_steps < 1:
        p.error("--repeats, --mlp-steps and --cnn-steps must be at least 1")
    data = load_mnist(a.data_dir)
    if data is None:
        g = torch.Generator().manual_seed(7)
        data = (torch.rand(6000, 1, 28, 28, generator=g), torch.randint(0, 10, (6000,), generator=g))
    threads = [int(t) for t in a.threads.split(",")]
    with open("/proc/loadavg") as f:
        print("load average before:", f.read().split()[:3])
    # The two sides alternate, one repetition of every workload each, so
    # that a slow spell of a shared host falls on both columns alike.
    nc_runs, pt_runs = [], []
    for r in range(a.repeats):
        print(f"repetition {r + 1} of {a.repeats}: normcore", flush=True)
        nc_runs.append(run_normcore(a))
        print(f"repetition {r + 1} of {a.repeats}: PyTorch", flush=True)
        pt = {}
        for th in threads:
            pt[("paper-mlp", th)] = time_torch(paper_mlp, 60, th, a.mlp_steps, data) * 1000 / a.mlp_steps
        for th in threads:
            pt[("cnn", th)] = time_torch(cnn, 64, th, a.cnn_steps, data) * (60000 / 64) / a.cnn_steps
        pt_runs.append(pt)
    med = lambda v: sorted(v)[len(v) // 2] if v else None
    rows = []
    for key, name in [("paper-mlp", "paper-mlp, batch 60, s per 1,000 steps"), ("cnn", "cnn, batch 64, s per epoch")]:
        for th in threads:
            ncv = med([run[(key, th)] for run in nc_runs if (key, th) in run])
            ptv = med([run[(key, th)] for run in pt_runs])
            rows.append((name, th, ptv, ncv))
    with open("/proc/loadavg") as f:
        print("load average after:", f.read().split()[:3])
    print(f"\nPyTorch {torch.__version__}, median of {a.repeats} alternating repetitions; "
          "ratio = PyTorch / normcore (> 1: normcore faster)\n")
    print("| workload | threads | PyTorch | normcore | ratio |")
    print("|---|---|---|---|---|")
    for name, th, pt, n in rows:
        r = f"{pt / n:.2f}x" if n else "n/a"
        ns = f"{n:.3f}" if n else "n/a"
        print(f"| {name} | {th} | {pt:.3f} | {ns} | {r} |")
    by = {(name, th): (pt, n) for name, th, pt, n in rows}
    for name in dict.fromkeys(name for name, _, _, _ in rows):
        one, two = by.get((name, 1)), by.get((name, 2))
        if one and two and one[1] and two[1]:
            print(f"{name}: the second thread's speed-up, normcore {one[1] / two[1]:.2f}x, "
                  f"PyTorch {one[0] / two[0]:.2f}x")


if __name__ == "__main__":
    main()
