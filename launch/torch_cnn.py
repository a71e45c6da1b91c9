#!/usr/bin/python3
"""torch_cnn.py: the reference CNN in PyTorch (CPU), to set dptrain's CNN speed and accuracy
against: conv(1->32,3x3,p1)-relu-maxpool2-conv(32->64,3x3,p1)-relu-maxpool2-flatten-
Linear(3136,128)-relu-Linear(128,10), cross-entropy, SGD with momentum, on Fashion-MNIST from
the dptrain HDF5 file (groups /train and /test; x uint8 [n,28,28] seen as x*scale+offset, y
int32 [n]). --model mlp trains the quickstart's MLP instead, 784-256-relu-128-relu-10 (with
--cosine, the learning rate of dptrain's cosine schedule, per step, to 0 at the last step).

Per epoch it prints the mean training loss, the test accuracy and the samples/s of the training
loop alone (batch gathering, forward, backward, gradient averaging and the update; evaluation
excluded); at the end one line

    TORCH samples_per_s=<median over the epochs after the first> threads=N batch=B

(with a single epoch, that epoch's figure; with --ranks N > 1, " ranks=N" is appended).
cpu_per_wall is rank 0's process CPU time over the wall time of its training loop: about the
thread count when the process had its cores to itself, less when it waited for a CPU.

--ranks N runs N processes with torch.distributed (gloo) through torch.multiprocessing, one
thread each, and DistributedDataParallel: every step the global batch of --batch rows is split
between the ranks (as dptrain shards it), each rank's loss is its sum over its rows divided by
the global batch size, times N (DDP averages the gradients, so the result is the gradient of
the mean over the global batch). With --bn and --ranks > 1 each rank's batch norm takes its
statistics over its own rows (torch 1.13's SyncBatchNorm, which would take them over the global
batch as dptrain does, refuses CPU modules under DistributedDataParallel); DDP copies rank 0's
running statistics to the others at every forward.

Debian's python3-torch is used as it is (nothing from pip): run with /usr/bin/python3.
"""
import argparse
import ctypes
import math
import os
import socket
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "datasets", "fashion_mnist.h5"),
                   help="dptrain HDF5 dataset (default: datasets/fashion_mnist.h5)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch", type=int, default=64, help="global batch (split over --ranks)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (with --ranks > 1: must be 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bn", action="store_true", help="BatchNorm2d after each conv, before relu")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout probability before the last linear layer (0: none)")
    p.add_argument("--ranks", type=int, default=1,
                   help="processes (gloo, DistributedDataParallel, 1 thread each)")
    p.add_argument("--steps-per-epoch", type=int, default=0,
                   help="stop each epoch after this many steps (0: the whole training set)")
    p.add_argument("--eval-batch", type=int, default=250)
    p.add_argument("--malloc-keep", action="store_true",
                   help="glibc mallopt: keep freed memory (trim threshold 2^31-1, mmap threshold "
                        "32 MiB) so that tensors reuse pages instead of faulting in new ones")
    p.add_argument("--model", choices=("cnn", "mlp"), default="cnn",
                   help="the CNN above, or the quickstart's MLP 784-256-128-10")
    p.add_argument("--cosine", action="store_true",
                   help="cosine learning-rate decay per step over the run (dptrain's default)")
    p.add_argument("--profile", action="store_true",
                   help="before training, profile 5 steps and print the top operators")
    a = p.parse_args(argv)
    if a.batch < a.ranks or a.ranks < 1 or a.epochs < 1 or a.threads < 1:
        p.error("need --ranks >= 1, --batch >= --ranks, --epochs >= 1, --threads >= 1")
    if a.ranks > 1 and a.threads != 1:
        p.error("--ranks > 1 runs one thread per process; leave --threads at 1")
    if not 0.0 <= a.dropout < 1.0:
        p.error("--dropout must be in [0, 1)")
    return a


# The thread counts go into the environment before torch loads: torch.set_num_threads bounds
# its OpenMP pool but not OpenBLAS (Debian's torch calls libblas.so.3, OpenBLAS with its own
# threads, for the linear layers), which reads OPENBLAS_NUM_THREADS when it loads. Processes
# started by --ranks inherit the environment.
if __name__ == "__main__":
    ARGS = parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def blas_threads():
    """OpenBLAS's thread count in this process (libblas.so.3 as torch uses it), or "n/a"."""
    try:
        return str(ctypes.CDLL("libblas.so.3").openblas_get_num_threads())
    except (OSError, AttributeError):
        return "n/a"


def load_split(path, split):
    """x float32 [n,1,28,28] = raw*scale+offset, y int64 [n]."""
    with h5py.File(path, "r") as f:
        dx = f[split]["x"]
        scale = float(dx.attrs.get("scale", 1.0))
        offset = float(dx.attrs.get("offset", 0.0))
        x = dx[...]
        y = f[split]["y"][...]
    x = torch.from_numpy(x.astype(np.float32) * np.float32(scale) + np.float32(offset))
    return x.reshape(x.shape[0], 1, x.shape[-2], x.shape[-1]).contiguous(), \
        torch.from_numpy(y.astype(np.int64))


class Net(nn.Module):
    def __init__(self, bn=False, dropout=0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64) if bn else nn.Identity()
        self.fc1 = nn.Linear(3136, 128)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(self.drop(x))


class MLP(nn.Module):
    def __init__(self, dropout=0.0):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 128)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc3 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc3(self.drop(F.relu(self.fc2(x))))


def make_model(args):
    return MLP(args.dropout) if args.model == "mlp" else Net(bn=args.bn, dropout=args.dropout)


def evaluate(model, x, y, rank, ranks, batch):
    """Accuracy over the whole split; each rank takes a contiguous share, then one allreduce."""
    model.eval()
    n = x.shape[0]
    lo, hi = n * rank // ranks, n * (rank + 1) // ranks
    correct = 0
    with torch.no_grad():
        for i in range(lo, hi, batch):
            j = min(i + batch, hi)
            correct += int((model(x[i:j]).argmax(1) == y[i:j]).sum())
    if ranks > 1:
        t = torch.tensor([correct], dtype=torch.int64)
        dist.all_reduce(t)
        correct = int(t.item())
    model.train()
    return correct / n


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h


def malloc_keep():
    libc = ctypes.CDLL("libc.so.6")
    if not (libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) and
            libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)):
        raise RuntimeError("mallopt failed")


def run(rank, args, port):
    ranks = args.ranks
    if args.malloc_keep:
        malloc_keep()
    torch.set_num_threads(args.threads)
    if ranks > 1:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=ranks)
    torch.manual_seed(args.seed)
    xtr, ytr = load_split(args.data, "train")
    xte, yte = load_split(args.data, "test")
    model = make_model(args)
    net = model
    if ranks > 1:
        net = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum)
    n, B = xtr.shape[0], args.batch
    steps = (n + B - 1) // B
    if n % B and n % B < ranks:
        steps -= 1  # a last batch too small to give every rank a row is dropped
    if args.steps_per_epoch > 0:
        steps = min(steps, args.steps_per_epoch)
    if rank == 0:
        print(f"torch {torch.__version__} (mkldnn {torch.backends.mkldnn.is_available()}), "
              f"model {args.model}{' (cosine lr)' if args.cosine else ''}, "
              f"threads {torch.get_num_threads()} per process (OpenBLAS {blas_threads()}, "
              f"OPENBLAS_CORETYPE {os.environ.get('OPENBLAS_CORETYPE', 'unset')}), "
              f"ranks {ranks}, batch {B} "
              f"(per rank ~{B // ranks}), lr {args.lr}, momentum {args.momentum}, "
              f"bn {args.bn}{' (per-rank statistics)' if ranks > 1 and args.bn else ''}, "
              f"dropout {args.dropout}, seed {args.seed}, {steps} steps an epoch, "
              f"malloc-keep {args.malloc_keep}, "
              f"train {n}, test {xte.shape[0]}", flush=True)

    total_steps, done_steps = steps * args.epochs, [0]

    def step(idx):
        if args.cosine:  # dptrain's cosine schedule: lr at step t of T = lr (1 + cos(pi t/T)) / 2
            for g in opt.param_groups:
                g["lr"] = args.lr * 0.5 * (1.0 + math.cos(math.pi * done_steps[0] / total_steps))
            done_steps[0] += 1
        lo, hi = idx.shape[0] * rank // ranks, idx.shape[0] * (rank + 1) // ranks
        mine = idx[lo:hi]
        xb, yb = xtr[mine], ytr[mine]
        opt.zero_grad(set_to_none=True)
        out = net(xb)
        loss_sum = F.cross_entropy(out, yb, reduction="sum")
        (loss_sum * (ranks / idx.shape[0])).backward()
        opt.step()
        return float(loss_sum.detach())

    if args.profile:
        g = torch.Generator().manual_seed(args.seed + 999)
        perm = torch.randperm(n, generator=g)
        with torch.autograd.profiler.profile() as prof:
            for s in range(5):
                step(perm[s * B:(s + 1) * B])
        if rank == 0:
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15),
                  flush=True)
        torch.manual_seed(args.seed)  # the profiled steps changed the weights: start again
        model.load_state_dict(make_model(args).state_dict())
        opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum)

    rates = []
    for epoch in range(1, args.epochs + 1):
        g = torch.Generator().manual_seed(args.seed * 1000003 + epoch)
        perm = torch.randperm(n, generator=g)
        loss_total = 0.0
        if ranks > 1:
            dist.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        for s in range(steps):
            loss_total += step(perm[s * B:min((s + 1) * B, n)])
        if ranks > 1:
            dist.barrier()
        train_s = time.perf_counter() - t0
        cpu_use = (time.process_time() - c0) / train_s
        seen = min(steps * B, n)
        if ranks > 1:
            t = torch.tensor([loss_total], dtype=torch.float64)
            dist.all_reduce(t)
            loss_total = float(t.item())
        t1 = time.perf_counter()
        if ranks > 1:  # every rank evaluates with rank 0's batch-norm running statistics
            for b in model.buffers():
                dist.broadcast(b, 0)
        acc = evaluate(model, xte, yte, rank, ranks, args.eval_batch)
        eval_s = time.perf_counter() - t1
        rates.append(seen / train_s)
        if rank == 0:
            print(f"epoch {epoch} train_loss {loss_total / seen:.4f} test_acc {acc:.4f} "
                  f"samples_per_s {seen / train_s:.1f} train_s {train_s:.2f} "
                  f"eval_s {eval_s:.2f} cpu_per_wall {cpu_use:.2f}", flush=True)
    if rank == 0:
        later = rates[1:] if len(rates) > 1 else rates
        extra = f" ranks={ranks}" if ranks > 1 else ""
        print(f"TORCH samples_per_s={statistics.median(later):.1f} threads={args.threads} "
              f"batch={B}{extra}", flush=True)
    if ranks > 1:
        # Leave without tearing the process group down: in torch 1.13, freeing the DDP reducer
        # joins gloo's worker thread while holding the GIL, and that thread may be releasing a
        # tensor, which needs the GIL (a deadlock seen here at exit; pytorch issue 56297). After
        # the barrier no collective is outstanding.
        dist.barrier()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    args = ARGS
    if args.ranks == 1:
        run(0, args, 0)
    else:
        mp.spawn(run, args=(args, free_port()), nprocs=args.ranks, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
