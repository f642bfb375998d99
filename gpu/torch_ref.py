"""torch_ref.py - the peer for shoal-gpu-check: the same exact k-NN in PyTorch.

    python3 gpu/torch_ref.py BASE.npy QUERIES.npy K METRIC [BUDGET_BYTES]

Loads base (n x d) and queries (nq x d) float32, moves them to the GPU, and
runs exact search with torch: distances from one matmul per query block (plus
norms for L2), torch.topk(largest=False). TF32 is off so the arithmetic is the
same plain fp32 as shoal's. Timed with CUDA events after a warm-up pass; prints
one line "qps=<queries per second> ms=<milliseconds>".
"""
import sys

import numpy as np
import torch


def main():
    base_path, query_path, k, metric = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    budget = int(sys.argv[5]) if len(sys.argv) > 5 else 2 << 30
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    x = torch.from_numpy(np.load(base_path)).to(dev)
    q = torch.from_numpy(np.load(query_path)).to(dev)
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    xn = (x * x).sum(dim=1)
    n = x.shape[0]
    # Query blocks so that one block's distance matrix stays within the budget.
    block = max(1, min(q.shape[0], budget // (4 * n)))

    def run():
        out = []
        for s in range(0, q.shape[0], block):
            qb = q[s:s + block]
            if metric == "cosine":
                qb = torch.nn.functional.normalize(qb, dim=1)
            dots = qb @ x.T
            if metric == "l2":
                d = (qb * qb).sum(dim=1, keepdim=True) + xn[None, :] - 2.0 * dots
            elif metric == "ip":
                d = -dots
            else:
                d = 1.0 - dots
            out.append(torch.topk(d, min(k, n), dim=1, largest=False))
        return out

    run()  # warm-up: cuBLAS handles, allocator
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    reps = 0
    total_ms = 0.0
    while reps < 3 or (total_ms < 500.0 and reps < 50):
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        total_ms += start.elapsed_time(end)
        reps += 1
    ms = total_ms / reps
    print("qps=%.1f ms=%.3f" % (q.shape[0] / (ms / 1e3), ms))


if __name__ == "__main__":
    main()
