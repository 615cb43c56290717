#!/usr/bin/env python3
"""Generate the ONNX import fixtures (run once by hand, not in CI).

    pip install onnx onnxruntime torch numpy
    python3 host-trainer/tests/onnx/generate.py

Writes beside this script:
- digits_cnn.onnx: a BN convnet trained here in PyTorch on the trainer's
  train split of host-trainer/data/digits.csv.gz (conv, depthwise conv, BN,
  ReLU, ReLU6, max pool, flatten, dense, BN1d, sigmoid, dense), exported in
  inference mode with BN kept; digits_cnn.logits.bin: onnxruntime's logits
  (f32 LE, [360, 10]) on the trainer's held-out test split, in its order;
  digits_cnn.json: PyTorch's and onnxruntime's test accuracy.
- ops_a.onnx, ops_b.onnx: graphs built with onnx.helper covering the other
  operators and attribute forms, random weights; *.io.bin: 4 inputs then
  onnxruntime's logits (f32 LE).
- err_*.onnx: graphs the importer must refuse.
"""
import gzip, json, os, struct
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "data", "digits.csv.gz")
M64 = (1 << 64) - 1


class Rng:  # normcore::Rng (SplitMix64) and its below/shuffle
    def __init__(self, seed):
        self.s = seed & M64

    def u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, bound):
        threshold = ((1 << 32) - bound) % bound
        while True:
            m = (self.u64() >> 32) * bound
            if (m & 0xFFFFFFFF) >= threshold:
                return m >> 32

    def shuffle(self, items):
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def digits_split():
    """The trainer's stratified 80/20 split (seed 2015) of the built-in digits."""
    rows = [list(map(int, l.split(","))) for l in gzip.open(DATA, "rt") if l.strip()]
    x = np.array([r[:64] for r in rows], np.float32) / 16.0
    y = np.array([r[64] for r in rows], np.int64)
    rng = Rng(2015)
    train, test = [], []
    for c in range(10):
        members = [i for i in range(len(y)) if y[i] == c]
        rng.shuffle(members)
        k = int(np.floor(0.8 * len(members) + 0.5))
        train += members[:k]
        test += members[k:]
    train.sort()
    test.sort()
    return x[train].reshape(-1, 1, 8, 8), y[train], x[test].reshape(-1, 1, 8, 8), y[test]


def save_f32(path, *arrays):
    with open(path, "wb") as f:
        for a in arrays:
            f.write(np.ascontiguousarray(a, "<f4").tobytes())


def digits_cnn():
    import torch
    from torch import nn

    torch.manual_seed(0)
    xtr, ytr, xte, yte = digits_split()
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 16, bias=False), nn.BatchNorm1d(16), nn.Sigmoid(),
        nn.Linear(16, 10),
    )
    opt = torch.optim.Adam(net.parameters(), 0.01)
    X, Y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for epoch in range(40):
        perm = torch.randperm(len(X))
        for i in range(0, len(X) - 31, 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(net(X[idx]), Y[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        torch_acc = float((net(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())
    path = os.path.join(HERE, "digits_cnn.onnx")
    torch.onnx.export(
        net, torch.zeros(1, 1, 8, 8), path, opset_version=17, dynamo=False,
        training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True,
        input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
    )
    model = onnx.load(path)
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" in ops, ops
    logits = ort.InferenceSession(path).run(None, {"image": xte})[0]
    ort_acc = float((logits.argmax(1) == yte).mean())
    save_f32(os.path.join(HERE, "digits_cnn.logits.bin"), logits)
    json.dump({"torch_test_accuracy": torch_acc, "onnxruntime_test_accuracy": ort_acc,
               "test_samples": int(len(yte)), "ops": ops},
              open(os.path.join(HERE, "digits_cnn.json"), "w"), indent=1)
    print("digits_cnn:", ops, "torch", torch_acc, "ort", ort_acc)


rs = np.random.RandomState(13)


def init(name, shape, scale=0.5):
    return numpy_helper.from_array((rs.randn(*shape) * scale).astype(np.float32), name)


def model(name, nodes, inits, in_shape, out_dim, opset=17):
    g = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_dim])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="generate.py")
    m.ir_version = 8
    return m


def save_io(name, m, in_shape):
    path = os.path.join(HERE, f"{name}.onnx")
    onnx.checker.check_model(m)
    onnx.save(m, path)
    x = rs.rand(4, *in_shape[1:]).astype(np.float32)
    y = ort.InferenceSession(path).run(None, {"x": x})[0]
    save_f32(os.path.join(HERE, f"{name}.io.bin"), x, y)
    print(name, [n.op_type for n in m.graph.node], y.shape)


def ops_a():
    # Conv (group 1, stride 2, SAME_LOWER, bias) - Clip(0, 6) from Constant
    # nodes - depthwise Conv (explicit asymmetric pads) - BN - Relu -
    # AveragePool (SAME_UPPER, stride 1) - Reshape [0, -1] - MatMul + Add -
    # BN - Tanh - Gemm (transB 0, alpha, beta) .
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "c1.w", "c1.b"], ["a1"], "conv_s2", strides=[2, 2], auto_pad="SAME_LOWER", kernel_shape=[3, 3]),
        n("Constant", [], ["lo"], "lo", value=numpy_helper.from_array(np.array(0, np.float32))),
        n("Constant", [], ["hi"], "hi", value_float=6.0),
        n("Clip", ["a1", "lo", "hi"], ["a2"], "relu6"),
        n("Conv", ["a2", "dw.w"], ["a3"], "depthwise", group=6, pads=[1, 0, 0, 1]),
        n("BatchNormalization", ["a3", "bn1.s", "bn1.b", "bn1.m", "bn1.v"], ["a4"], "bn1", epsilon=1e-3),
        n("Relu", ["a4"], ["a5"], "relu"),
        n("AveragePool", ["a5"], ["a6"], "avg", kernel_shape=[2, 2], auto_pad="SAME_UPPER"),
        n("Constant", [], ["shape"], "shape", value_ints=[0, -1]),
        n("Reshape", ["a6", "shape"], ["a7"], "reshape"),
        n("MatMul", ["a7", "mm.w"], ["a8"], "matmul"),
        n("Add", ["a8", "mm.b"], ["a9"], "add"),
        n("BatchNormalization", ["a9", "bn2.s", "bn2.b", "bn2.m", "bn2.v"], ["a10"], "bn2"),
        n("Tanh", ["a10"], ["a11"], "tanh"),
        n("Gemm", ["a11", "g.w", "g.b"], ["y"], "gemm", alpha=0.5, beta=2.0),
    ]
    var = lambda nm, c: numpy_helper.from_array((rs.rand(c) + 0.5).astype(np.float32), nm)
    inits = [init("c1.w", (6, 2, 3, 3)), init("c1.b", (6,)), init("dw.w", (6, 1, 3, 3)),
             init("bn1.s", (6,)), init("bn1.b", (6,)), init("bn1.m", (6,)), var("bn1.v", 6),
             # 7x5 input -> conv s2 SAME: 4x3 -> depthwise pads (1,0,0,1): 3x2 -> avg same: 3x2
             init("mm.w", (36, 12), 0.3), init("mm.b", (12,)),
             init("bn2.s", (12,)), init("bn2.b", (12,)), init("bn2.m", (12,)), var("bn2.v", 12),
             init("g.w", (12, 5)), init("g.b", (5,))]
    save_io("ops_a", model("ops_a", nodes, inits, ["N", 2, 7, 5], 5), [1, 2, 7, 5])


def ops_b():
    # Conv (pads, stride 1) - Clip(min 0) as ReLU from initializers - MaxPool
    # (stride 2, pads) - Sigmoid - Conv 1x1 - GlobalAveragePool - Flatten -
    # Dropout - Identity - Gemm (transB 1, no C) - Relu - Gemm (transB 1).
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "c1.w"], ["a1"], "conv", pads=[1, 1, 1, 1], dilations=[1, 1]),
        n("Clip", ["a1", "zero"], ["a2"], "relu_clip"),
        n("MaxPool", ["a2"], ["a3"], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        n("Sigmoid", ["a3"], ["a4"], "sigmoid"),
        n("Conv", ["a4", "c2.w", "c2.b"], ["a5"], "conv1x1"),
        n("GlobalAveragePool", ["a5"], ["a6"], "gap"),
        n("Flatten", ["a6"], ["a7"], "flatten"),
        n("Dropout", ["a7"], ["a8"], "dropout"),
        n("Identity", ["a8"], ["a9"], "identity"),
        n("Gemm", ["a9", "g1.w"], ["a10"], "gemm1", transB=1),
        n("Relu", ["a10"], ["a11"], "relu"),
        n("Gemm", ["a11", "g2.w", "g2.b"], ["y"], "gemm2", transB=1),
    ]
    inits = [init("c1.w", (4, 3, 3, 3)), numpy_helper.from_array(np.array(0, np.float32), "zero"),
             init("c2.w", (7, 4, 1, 1)), init("c2.b", (7,)), init("g1.w", (9, 7)),
             init("g2.w", (3, 9)), init("g2.b", (3,))]
    save_io("ops_b", model("ops_b", nodes, inits, ["N", 3, 6, 6], 3), [1, 3, 6, 6])


def flat_perm():
    # Conv 3 channels on 2x3 -> Flatten -> Gemm: the C·H·W vs H·W·C column order.
    n = helper.make_node
    nodes = [n("Conv", ["x", "c.w"], ["a"], "conv", pads=[1, 1, 1, 1]),
             n("Flatten", ["a"], ["b"], "flatten"),
             n("Gemm", ["b", "g.w", "g.b"], ["y"], "dense", transB=1)]
    inits = [init("c.w", (3, 1, 3, 3)), init("g.w", (4, 18)), init("g.b", (4,))]
    save_io("flat_perm", model("flat_perm", nodes, inits, ["N", 1, 2, 3], 4), [1, 1, 2, 3])


def errors():
    n = helper.make_node
    w = lambda: [init("c.w", (2, 1, 3, 3)), init("g.w", (2, 32))]
    base = lambda extra, out="f": [n("Conv", ["x", "c.w"], ["c"], "conv", pads=[1, 1, 1, 1])] + extra
    cases = {
        "err_unsupported": base([n("LeakyRelu", ["c"], ["l"], "leaky"), n("Flatten", ["l"], ["f"], "flat"),
                                 n("Gemm", ["f", "g.w"], ["s"], "dense", transB=1),
                                 n("Softmax", ["s"], ["y"], "softmax")]),
        "err_branch": base([n("Relu", ["c"], ["r"], "relu"), n("Add", ["r", "c"], ["a"], "skip"),
                            n("Flatten", ["a"], ["f"], "flat"), n("Gemm", ["f", "g.w"], ["y"], "dense", transB=1)]),
        "err_training_bn": base([n("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn", "rm", "rv"], "bn",
                                   training_mode=1),
                                 n("Flatten", ["bn"], ["f"], "flat"), n("Gemm", ["f", "g.w"], ["y"], "dense", transB=1)]),
    }
    bn = [numpy_helper.from_array(np.ones(2, np.float32), k) for k in "svm"] + \
         [numpy_helper.from_array(np.zeros(2, np.float32), "b")]
    for name, nodes in cases.items():
        inits = w() + (bn if "bn" in name else [])
        g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.save(m, os.path.join(HERE, f"{name}.onnx"))
    # Dynamic spatial size.
    nodes = base([n("GlobalAveragePool", ["c"], ["p"], "gap"), n("Flatten", ["p"], ["y"], "flat")])
    g = helper.make_graph(nodes, "err_dynamic", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], [init("c.w", (2, 1, 3, 3))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, os.path.join(HERE, "err_dynamic.onnx"))


if __name__ == "__main__":
    ops_a()
    ops_b()
    flat_perm()
    errors()
    digits_cnn()
