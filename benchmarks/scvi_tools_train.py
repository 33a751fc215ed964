"""Train scvi-tools' SCVI on one .h5ad with the benchmark's settings; print one JSON line.

Run by benchmarks/run.py under /usr/bin/time -v (peak RSS) with the thread count in the
environment. Times only model.train() (setup_anndata and reading the file are reported
apart). With --max-steps-per-epoch the epochs are cut to that many minibatches
(Lightning's limit_train_batches) and cells/s counts only the cells actually trained.
With --same-split the train/validation cells are atlasvi's (`atlasvi train --seed S`,
recomputed by benchmarks/fidelity_train.py atlasvi_split and passed as external_indexing),
so the held-out ELBO of both tools is taken on the same cells.
"""

import argparse
import json
import math
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-steps-per-epoch", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--same-split", action="store_true",
                    help="validate on atlasvi's validation cells (atlasvi train --seed SEED)")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    import anndata
    import scvi

    scvi.settings.seed = a.seed
    scvi.settings.num_threads = a.threads
    scvi.settings.dl_num_workers = 0

    t0 = time.perf_counter()
    adata = anndata.read_h5ad(a.input)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    model = scvi.model.SCVI(adata)
    t_setup = time.perf_counter() - t0

    kw = {"train_size": 0.9}
    if a.same_split:
        import numpy as np

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from fidelity_train import atlasvi_split

        tr, va = atlasvi_split(adata.n_obs, a.seed)
        kw = {"datasplitter_kwargs": {"external_indexing": [tr, va, np.array([], dtype=np.int64)]}}
    if a.max_steps_per_epoch > 0:
        kw["limit_train_batches"] = a.max_steps_per_epoch
        kw["limit_val_batches"] = a.max_steps_per_epoch
    from lightning.pytorch.callbacks import Callback

    class EpochLoopTimer(Callback):
        """Seconds from each epoch's first minibatch to its last one (data loading and
        optimiser steps; train()'s set-up, sanity check and validation excluded)."""

        def __init__(self):
            self.t0, self.t1, self.loops = None, None, []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.t1 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            if self.t0 is not None and self.t1 is not None:
                self.loops.append(self.t1 - self.t0)
            self.t0 = self.t1 = None

    timer = EpochLoopTimer()
    kw["callbacks"] = [timer]
    t0, c0 = time.perf_counter(), time.process_time()
    model.train(
        max_epochs=a.epochs,
        batch_size=a.batch_size,
        accelerator="cpu",
        devices=1,
        check_val_every_n_epoch=a.epochs,
        enable_progress_bar=False,
        **kw,
    )
    t_train, cpu_train = time.perf_counter() - t0, time.process_time() - c0

    n = adata.n_obs
    n_train = int(math.ceil(0.9 * n))
    if a.same_split:
        n_train = len(tr)
    steps = math.ceil(n_train / a.batch_size)
    if a.max_steps_per_epoch > 0 and a.max_steps_per_epoch < steps:
        cells = a.max_steps_per_epoch * a.batch_size * a.epochs
    else:
        cells = n_train * a.epochs
    h = model.history
    elbo_val = None
    if "elbo_validation" in h:
        v = h["elbo_validation"].dropna()
        if len(v):
            elbo_val = float(v.iloc[-1, 0])
    elbo_train = float(h["elbo_train"].iloc[-1, 0]) if "elbo_train" in h else None
    out = {
        "impl": "scvi-tools",
        "version": scvi.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "n_cells": n,
        "epochs": a.epochs,
        "max_steps_per_epoch": a.max_steps_per_epoch,
        "cells_trained": cells,
        "seconds_read": t_read,
        "seconds_setup": t_setup,
        "seconds_train": t_train,
        "cells_per_s": cells / t_train,
        "epoch_loop_seconds": timer.loops,
        "cpu_seconds_train": cpu_train,
        "elbo_validation": elbo_val,
        "elbo_train": elbo_train,
        "same_split": a.same_split,
    }
    print("BENCH_JSON " + json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
