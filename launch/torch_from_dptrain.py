#!/usr/bin/python3
"""torch_from_dptrain.py: builds the torch.nn.Sequential of a dptrain model file (MLP or CNN)
from the tensors as stored (README.md, "Model files"), and checks it against dptrain:

    /usr/bin/python3 launch/torch_from_dptrain.py MODEL.h5 DATA.h5 [PRED.csv]

prints torch's test accuracy on DATA.h5's /test split and, given the CSV of
`dptrain predict --checkpoint MODEL.h5 --data DATA.h5 --output PRED.csv` (softmax outputs),
the largest difference between the two programs' probabilities. Needs Debian's python3-torch
and python3-h5py (not a dependency of dptrain or its tests)."""
import re
import sys

import h5py
import numpy as np
import torch


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def pair(s, default):
    """'3' -> (3, 3), '5x3' -> (5, 3), None -> default."""
    if s is None:
        return default
    a, _, b = s.partition("x")
    return (int(a), int(b or a))


ACTS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
        "elu": torch.nn.ELU, "gelu": torch.nn.GELU, "identity": torch.nn.Identity,
        "leaky-relu": torch.nn.LeakyReLU}
TOKEN = re.compile(r"(conv(\d+)k|maxpool|avgpool)(\d+(?:x\d+)?)(?:s(\d+(?:x\d+)?))?(?:p(\d+(?:x\d+)?))?$")


def bn(cls, group, n, eps):
    b = cls(n, eps=eps)
    b.weight.data = torch.tensor(group["bn_gamma"][:])
    b.bias.data = torch.tensor(group["bn_beta"][:])
    b.running_mean = torch.tensor(group["bn_running_mean"][:])
    b.running_var = torch.tensor(group["bn_running_var"][:])
    return b


def build(f):
    eps = float(f.attrs.get("bn_eps", 1e-5))
    layers, shape = [], None
    if "stages" in f.attrs:
        shape = tuple(int(v) for v in f.attrs["input_shape"])
        for j, tok in enumerate(text(f.attrs["stages"]).split(",")):
            head, *sets = tok.split(":")
            m = TOKEN.match(head)
            k = pair(m.group(3), None)
            if m.group(1).startswith("conv"):
                g = f[f"conv/{j}"]
                w = torch.tensor(g["weight"][:])
                conv = torch.nn.Conv2d(w.shape[1], w.shape[0], k, pair(m.group(4), (1, 1)),
                                       pair(m.group(5), (0, 0)))
                conv.weight.data, conv.bias.data = w, torch.tensor(g["bias"][:])
                layers.append(conv)
                if "bn" in sets:
                    layers.append(bn(torch.nn.BatchNorm2d, g, w.shape[0], eps))
                layers.append(ACTS[next(s for s in sets if s in ACTS)]())
            else:
                pool = torch.nn.MaxPool2d if m.group(1) == "maxpool" else torch.nn.AvgPool2d
                layers.append(pool(k, pair(m.group(4), k)))
        if text(f.attrs["stage_end"]) == "gap":
            layers.append(torch.nn.AdaptiveAvgPool2d(1))
        layers.append(torch.nn.Flatten())
    acts = text(f.attrs["activations"]).split(",")
    batchnorm = f.attrs.get("batchnorm", [0] * len(acts))
    for i, act in enumerate(acts):
        g = f[f"layers/{i}"]
        w = torch.tensor(g["weight"][:])
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        lin.weight.data, lin.bias.data = w, torch.tensor(g["bias"][:])
        layers.append(lin)
        if batchnorm[i]:
            layers.append(bn(torch.nn.BatchNorm1d, g, w.shape[0], eps))
        layers.append(ACTS[act]())
    return torch.nn.Sequential(*layers).eval(), shape


def main():
    model, data = sys.argv[1], sys.argv[2]
    net, shape = build(h5py.File(model, "r"))
    print(net)
    t = h5py.File(data, "r")["test"]
    x = t["x"][:].astype(np.float32)
    x = x * float(t["x"].attrs.get("scale", 1.0)) + float(t["x"].attrs.get("offset", 0.0))
    x = torch.tensor(x.reshape((-1,) + shape) if shape else x.reshape(len(x), -1))
    with torch.no_grad():
        p = torch.softmax(net(x), 1).numpy()
    print(f"torch test accuracy {(p.argmax(1) == t['y'][:]).mean():.4f}")
    if len(sys.argv) > 3:
        q = np.loadtxt(sys.argv[3], delimiter=",", skiprows=1)[:, 1:1 + p.shape[1]]
        print(f"max |p_torch - p_dptrain| {np.abs(p - q).max():.3g} over {p.size} outputs; "
              f"same predicted class in {(p.argmax(1) == q.argmax(1)).mean() * 100:.2f} % of rows")


if __name__ == "__main__":
    main()
