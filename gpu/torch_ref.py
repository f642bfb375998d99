"""torch_ref.py - the peers for shoal-gpu-check: the same exact k-NN in
PyTorch and, when it is importable with GPUs, Faiss.

    python3 gpu/torch_ref.py BASE.npy QUERIES.npy K METRIC [BUDGET_BYTES] [--faiss]

Loads base (n x d) and queries (nq x d) float32 onto the GPU.

torch: the fair form of exact search in torch, not element-wise norm maths:
per query block, one torch.addmm(|x|^2, q, x^T, alpha=-2) (the GEMM with
the norms folded into its epilogue; |q|^2 does not change a query's order
and is added to the k results only), then torch.topk(largest=False). TF32 is
off so the arithmetic is the same plain fp32 as shoal's. Prints
"qps=<queries per second> ms=<milliseconds>".

--faiss: also Faiss's GPU flat index (GpuIndexFlatL2 / GpuIndexFlatIP, the
same fp32 data), if `import faiss` works and it sees a GPU; prints
"faiss_qps=... faiss_ms=..." or "faiss: <why not>".

Timing: CUDA events (torch) or wall time after synchronising (Faiss), after
a warm-up pass, repeated until 0.5 s or 50 passes.
"""
import sys
import time

import numpy as np
import torch


def timed(run, sync):
    run()  # warm-up: cuBLAS handles, allocator, Faiss temp memory
    sync()
    reps, total = 0, 0.0
    while reps < 3 or (total < 0.5 and reps < 50):
        t0 = time.perf_counter()
        run()
        sync()
        total += time.perf_counter() - t0
        reps += 1
    return total / reps


def torch_search(x, q, k, metric, budget):
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    n = x.shape[0]
    xt = x.t()
    xn = (x * x).sum(dim=1) if metric == "l2" else None
    block = max(1, min(q.shape[0], budget // (4 * n)))
    kk = min(k, n)

    def run():
        out = []
        for s in range(0, q.shape[0], block):
            qb = q[s:s + block]
            if metric == "cosine":
                qb = torch.nn.functional.normalize(qb, dim=1)
            if metric == "l2":
                d = torch.addmm(xn.unsqueeze(0).expand(qb.shape[0], n), qb, xt, alpha=-2.0)
                vals, idx = torch.topk(d, kk, dim=1, largest=False)
                vals = vals + (qb * qb).sum(dim=1, keepdim=True)
            else:
                # -q.x (ip) or 1 - q.x (cosine): the order of the largest dots.
                vals, idx = torch.topk(qb @ xt, kk, dim=1, largest=True)
                vals = -vals if metric == "ip" else 1.0 - vals
            out.append((vals, idx))
        return out

    return timed(run, torch.cuda.synchronize)


def faiss_search(xs, qs, k, metric):
    try:
        import faiss
    except ImportError as e:
        return None, "not importable (%s)" % e
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return None, "no GPU build or no GPU"
    if metric == "cosine":
        xs = xs / np.maximum(np.linalg.norm(xs, axis=1, keepdims=True), 1e-30)
        qs = qs / np.maximum(np.linalg.norm(qs, axis=1, keepdims=True), 1e-30)
    res = faiss.StandardGpuResources()
    d = xs.shape[1]
    index = faiss.GpuIndexFlatL2(res, d) if metric == "l2" else faiss.GpuIndexFlatIP(res, d)
    index.add(np.ascontiguousarray(xs, dtype=np.float32))
    qs = np.ascontiguousarray(qs, dtype=np.float32)
    return timed(lambda: index.search(qs, k), lambda: None), None


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    base_path, query_path, k, metric = args[0], args[1], int(args[2]), args[3]
    budget = int(args[4]) if len(args) > 4 else 2 << 30
    torch.backends.cuda.matmul.allow_tf32 = False
    xs, qs = np.load(base_path), np.load(query_path)
    dev = torch.device("cuda")
    x = torch.from_numpy(xs).to(dev)
    q = torch.from_numpy(qs).to(dev)
    sec = torch_search(x, q, k, metric, budget)
    print("qps=%.1f ms=%.3f" % (q.shape[0] / sec, sec * 1e3))
    if "--faiss" in sys.argv:
        del x, q
        torch.cuda.empty_cache()
        sec, why = faiss_search(xs, qs, k, metric)
        if sec is None:
            print("faiss: %s" % why)
        else:
            print("faiss_qps=%.1f faiss_ms=%.3f" % (qs.shape[0] / sec, sec * 1e3))


if __name__ == "__main__":
    main()
