"""Loss curves of atlasvi and scvi-tools on one file: both train for the same number of
epochs, validating after every epoch on the same held-out cells; writes a PNG of
elbo_train and elbo_validation per epoch and prints one JSON line (LOSS_JSON).

Run by benchmarks/run.py with the python that has scvi-tools (numpy, matplotlib):

    python3 benchmarks/loss_curves.py build-perf/atlasvi build-bench/sim_10k.h5ad \\
        --epochs 20 --threads 2 --work build-bench --png docs/benchmarks_loss.png

Same validation cells: atlasvi's split (src/train.c) is recomputed in numpy by
benchmarks/fidelity_train.py atlasvi_split and handed to scvi-tools as
datasplitter_kwargs external_indexing, so both tools validate on the same cells (each with
its own initial weights, minibatch order and noise). The reconstruction is checked each
run: atlasvi's final weights are loaded into a scvi-tools SCVI and the (deterministic)
KL term averaged over the recomputed validation cells must match atlasvi's
kl_local_validation of the last epoch (fidelity_train.analytic_kl).

Defaults of SCVI / SCVI.train for both (batch 128, lr 1e-3, KL warm-up over 400 epochs,
train size 0.9 not given explicitly), seed 0, the same threads.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def atlasvi_curves(exe, data, epochs, threads, work, seed):
    met = os.path.join(work, "loss_atlasvi.jsonl")
    model = os.path.join(work, "loss_atlasvi_model.h5")
    for p in (met, model):
        if os.path.exists(p):
            os.remove(p)
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    cmd = [exe, "train", data, "--batch-key", "batch", "--max-epochs", str(epochs), "--seed",
           str(seed), "--batch-size", "128", "--threads", str(threads),
           "--check-val-every-n-epoch", "1", "--metrics", met, "--model-out", model,
           "--no-progress"]
    print("[loss]", " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    rows = [json.loads(l) for l in open(met) if l.strip()]
    cur = {k: [r.get(k) for r in rows] for k in (
        "elbo_train", "elbo_validation", "reconstruction_loss_validation",
        "kl_local_validation")}
    return {"tool": "atlasvi", "epochs": len(rows), "curves": cur,
            "seconds_train": rows[-1]["seconds"], "wall_s": wall, "command": " ".join(cmd)}, model


def scvi_curves(adata, epochs, threads, seed, train_idx, val_idx):
    import numpy as np
    import scvi
    import torch

    scvi.settings.seed = seed
    scvi.settings.num_threads = threads
    scvi.settings.dl_num_workers = 0
    torch.set_num_threads(threads)
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    m = scvi.model.SCVI(adata)
    t0 = time.perf_counter()
    m.train(max_epochs=epochs, batch_size=128, accelerator="cpu", devices=1,
            check_val_every_n_epoch=1, enable_progress_bar=False,
            datasplitter_kwargs={"external_indexing": [train_idx, val_idx,
                                                       np.array([], dtype=np.int64)]})
    secs = time.perf_counter() - t0
    h = m.history

    def col(k):
        if k not in h:
            return [None] * epochs
        s = h[k].iloc[:, 0]
        return [None if v != v else float(v) for v in s.tolist()]

    cur = {k: col(k) for k in ("elbo_train", "elbo_validation",
                               "reconstruction_loss_validation", "kl_local_validation")}
    return {"tool": "scvi-tools", "epochs": len(cur["elbo_train"]), "curves": cur,
            "seconds_train": secs, "wall_s": secs, "version": scvi.__version__,
            "torch": torch.__version__}


def plot(res, png):
    try:
        import matplotlib
    except ImportError:
        print("[loss] matplotlib is not installed: no loss-curve PNG (pip install matplotlib)",
              file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in ((axes[0], "elbo_train", "training ELBO (per epoch)"),
                           (axes[1], "elbo_validation", "held-out ELBO (same validation cells)")):
        for r, c in ((res["atlasvi"], "#4c72b0"), (res["scvi"], "#dd8452")):
            y = r["curves"][key]
            pts = [(i + 1, v) for i, v in enumerate(y) if v is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, color=c,
                        label=r["tool"])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("-ELBO per cell (lower is better)")
        ax.set_title(title, fontsize=10)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"scVI on {res['n_cells']:,} simulated cells x {res['n_genes']} genes, "
                 f"batch 128, {res['threads']} threads", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=100)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("atlasvi")
    ap.add_argument("input")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=".")
    ap.add_argument("--png", default="")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)

    import anndata

    sys.path.insert(0, HERE)
    from fidelity_train import analytic_kl, atlasvi_split, load_atlasvi_weights

    av, model_h5 = atlasvi_curves(a.atlasvi, a.input, a.epochs, a.threads, a.work, a.seed)
    adata = anndata.read_h5ad(a.input)
    train_idx, val_idx = atlasvi_split(adata.n_obs, a.seed)
    sc = scvi_curves(adata, a.epochs, a.threads, a.seed, train_idx, val_idx)

    # split check: atlasvi's final weights, analytic KL over the recomputed validation cells
    import scvi

    chk = scvi.model.SCVI(adata)
    load_atlasvi_weights(chk, model_h5)
    kl_re = analytic_kl(chk, adata, val_idx)
    kl_av = av["curves"]["kl_local_validation"][-1]
    res = {"n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars), "threads": a.threads,
           "epochs": a.epochs, "n_train": int(len(train_idx)), "n_val": int(len(val_idx)),
           "atlasvi": av, "scvi": sc,
           "split_check": {"kl_validation_atlasvi": kl_av, "kl_validation_recomputed": kl_re,
                           "ok": bool(kl_av is not None and abs(kl_av - kl_re) <= 0.01 *
                                      max(1.0, abs(kl_av)))}}
    res["png"] = a.png if a.png and plot(res, a.png) else None
    print("LOSS_JSON " + json.dumps(res), flush=True)


if __name__ == "__main__":
    sys.exit(main())
