"""Training-level agreement: atlasvi against scvi-tools 1.4.2, same data, same settings.

Run by hand (never by CI) with the pyenv python3 that has scvi-tools (and, for the
integration metrics, scib-metrics) installed:

    cmake -S . -B build-fid -DCMAKE_BUILD_TYPE=Release && cmake --build build-fid -j2 --target atlasvi
    python3 benchmarks/fidelity_train.py --atlasvi build-fid/atlasvi --work /tmp/fid_train

For each dataset and seed both tools train scVI with the defaults of SCVI / SCVI.train
(n_hidden 128, n_latent 10, 1 layer, ZINB, gene dispersion, batch norm, lr 1e-3,
weight decay 1e-6, batch size 128, KL warm-up over 400 epochs, train size 0.9) for the
same number of epochs, validating after every epoch. Each run goes in sequence with 2
threads (torch.set_num_threads(2); atlasvi --threads 2 with OMP_NUM_THREADS=2).

Same validation cells. atlasvi's split is a counter-based hash of the cell index
(Philox4x32-10 keyed by --seed, stream 1; the n_val cells with the smallest keys are held
out), scvi-tools' is a numpy permutation. This script recomputes atlasvi's split in numpy
(atlasvi_split below, a copy of src/train.c split_key/split_cells) and hands the same
train/validation indices to scvi-tools (datasplitter_kwargs external_indexing), so the
elbo_validation of both tools is measured on the same held-out cells, with each tool's
own weights initialisation, minibatch order and noise. The split reconstruction is
checked every run: atlasvi's saved weights are loaded into a scvi-tools SCVI and the
(deterministic, analytic) KL term is averaged over the reconstructed validation cells;
it must match atlasvi's kl_local_validation of the last epoch.

Reported per run: elbo_validation, reconstruction_loss_validation, kl_local_validation
(last epoch; -ELBO per cell, lower is better), train wall time, the ELBO and
reconstruction error of the final weights on the validation cells by one common evaluator
(scvi-tools get_elbo / get_reconstruction_error, one posterior sample per cell) and by
atlasvi posterior --elbo. Per dataset: scib-metrics Benchmarker on the latent means of
all runs (bio conservation and batch correction, pre-integrated embedding = PCA of
log1p(normalize_total) counts).

Writes WORK/results.jsonl (one line per run or metric table; re-runs append, the last
line per key wins) and WORK/report.md (markdown tables); --report-only rebuilds the
report from results.jsonl.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = "/work/shared/data"

DATASETS = {
    "kang": dict(path=f"{DATA}/real_pbmc_kang18_ctrl_12261x1287.h5ad", batch="sample_id",
                 labels="cluster_id", epochs=10),
    "starmap": dict(path=f"{DATA}/starmap_mpfc_3704x158.loom", batch="BatchID",
                    labels="Clusters", epochs=30, drop_label="NA"),
    "heart": dict(path=f"{DATA}/heart_hca_fibro_endo_320x136.h5ad",
                  batch="assay_ontology_term_id", labels="cell_type_ontology_term_id",
                  epochs=50),
    "sim50k": dict(path=None, batch="batch", labels="cell_type", epochs=2,
                   simulate=["--n-cells", "50000", "--n-genes", "2000", "--n-batches", "4",
                             "--n-cell-types", "10"]),
}

# ---------------------------------------------------------------- atlasvi's split

_MASK = np.uint64(0xFFFFFFFF)


def philox4x32(key, c0, c1, c2, c3):
    """Philox4x32-10 (src/rng.h av_philox), vectorised over the counters."""
    k0, k1 = np.uint64(key & 0xFFFFFFFF), np.uint64((key >> 32) & 0xFFFFFFFF)
    x = np.broadcast_arrays(*(np.asarray(c, dtype=np.uint64) & _MASK for c in (c0, c1, c2, c3)))
    x0, x1, x2, x3 = (v.copy() for v in x)
    for _ in range(10):
        p0, p1 = np.uint64(0xD2511F53) * x0, np.uint64(0xCD9E8D57) * x2
        x0, x1, x2, x3 = ((p1 >> np.uint64(32)) ^ x1 ^ k0, p1 & _MASK,
                          (p0 >> np.uint64(32)) ^ x3 ^ k1, p0 & _MASK)
        k0 = (k0 + np.uint64(0x9E3779B9)) & _MASK
        k1 = (k1 + np.uint64(0xBB67AE85)) & _MASK
    return x0, x1, x2, x3


ATLASVI_SPLIT_OFF_BY_ONE = False  # fixed in src/train.c; True reproduces the earlier runs


def atlasvi_split(n, seed, batch_size=128, train_size=0.9):
    """atlasvi train's train/validation cells (src/train.c split_key, split_cells)."""
    n_train = math.ceil(train_size * n)
    n_val = n - n_train
    r = n_train % batch_size
    if r in (1, 2) and n_val > 0:  # as scvi-tools when train_size is not given
        n_train, n_val = n_train - r, n_val + r
    cell = np.arange(n, dtype=np.uint64)
    v = philox4x32(seed, cell & _MASK, cell >> np.uint64(32), 1, 0)
    keys = (v[0] << np.uint64(32)) | v[1]
    order = np.argsort(keys, kind="stable")
    # atlasvi 0.x (src/train.c split_cells) holds out one cell more than it means to: its
    # bisection ends with lo = the (n_val+1)-th smallest key and keeps keys <= lo, so the
    # validation set is the n_val + 1 smallest keys (see docs/fidelity.md). Reproduce what
    # it does, not what it intends, so both tools see the same cells.
    if n_val > 0 and ATLASVI_SPLIT_OFF_BY_ONE:
        n_val += 1
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# ---------------------------------------------------------------- data


def load_adata(ds, work, atlasvi):
    """AnnData for scvi-tools (counts in X as int64-indexed CSR) and atlasvi's input path."""
    import anndata as ad
    import scipy.sparse as sp

    cfg = DATASETS[ds]
    if cfg.get("simulate"):
        path = os.path.join(work, f"{ds}.h5ad")
        if not os.path.exists(path):
            subprocess.run([atlasvi, "simulate", path, *cfg["simulate"]], check=True)
        av_input = path
    else:
        path = av_input = cfg["path"]
    if path.endswith(".loom"):
        sys.path.insert(0, HERE)
        from de_fidelity import write_h5ad

        h5 = os.path.join(work, f"{ds}.h5ad")
        a = write_h5ad(path, h5)  # genes x cells loom -> cells x genes, BatchID as strings
    else:
        a = ad.read_h5ad(path)
    x = a.X
    if sp.issparse(x):
        x = sp.csr_matrix(x)
        x = sp.csr_matrix((x.data.astype(np.float32), x.indices.astype(np.int64),
                           x.indptr.astype(np.int64)), shape=x.shape)
        x.eliminate_zeros()
    a.X = x
    for k in (cfg["batch"], cfg["labels"]):
        a.obs[k] = a.obs[k].astype(str).astype("category")
    return a, av_input


# ---------------------------------------------------------------- runs


def last_metrics(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return rows[-1], len(rows)


def load_atlasvi_weights(model, path):
    import h5py
    import torch

    sd = model.module.state_dict()
    with h5py.File(path, "r") as f:
        for grp in ("params", "buffers"):
            for k in f[grp]:
                if k in sd:
                    sd[k] = torch.as_tensor(f[grp][k][:]).reshape(sd[k].shape).to(sd[k].dtype)
    model.module.load_state_dict(sd)
    model.is_trained_ = True
    model.module.eval()


def analytic_kl(model, adata, idx, batch_size=1024):
    """Mean over cells idx of KL(q(z|x) || N(0, I)) in eval mode (deterministic)."""
    import torch

    out = []
    dl = model._make_data_loader(adata=adata, indices=idx, batch_size=batch_size)
    model.module.eval()
    with torch.no_grad():
        for t in dl:
            inf = model.module.inference(**model.module._get_inference_input(t))
            mu, sd = inf["qz"].loc.double(), inf["qz"].scale.double()
            out.append((0.5 * (mu**2 + sd**2 - 2 * torch.log(sd) - 1)).sum(1).numpy())
    return float(np.concatenate(out).mean())


def run_atlasvi(a, ds, seed, epochs, av_input, work, args, val_idx, train_idx):
    import scvi

    cfg = DATASETS[ds]
    tag = f"{ds}_s{seed}"
    met, model_h5, out = (os.path.join(work, f"av_{tag}.{e}") for e in ("jsonl", "h5", "h5ad"))
    for p in (met, model_h5, out):
        if os.path.exists(p):
            os.remove(p)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    cmd = [args.atlasvi, "train", av_input, "--batch-key", cfg["batch"], "--max-epochs",
           str(epochs), "--seed", str(seed), "--threads", str(args.threads),
           "--check-val-every-n-epoch", "1", "--metrics", met, "--model-out", model_h5,
           "--output", out, "--no-progress"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    last, n_epochs = last_metrics(met)
    import anndata as ad

    z = ad.read_h5ad(out).obsm["X_scVI"]
    np.save(os.path.join(work, f"z_atlasvi_{tag}.npy"), z)
    r = dict(kind="run", dataset=ds, tool="atlasvi", seed=seed, epochs=n_epochs,
             n_train=len(train_idx), n_val=len(val_idx),
             elbo_validation=last["elbo_validation"],
             reconstruction_loss_validation=last["reconstruction_loss_validation"],
             kl_local_validation=last["kl_local_validation"],
             elbo_train=last["elbo_train"], train_s=last["seconds"], wall_s=wall,
             command=" ".join(cmd))
    # the same weights in scvi-tools: split check (analytic KL) and common evaluator
    scvi.model.SCVI.setup_anndata(a, batch_key=cfg["batch"])
    m = scvi.model.SCVI(a)
    load_atlasvi_weights(m, model_h5)
    r["kl_val_recomputed"] = analytic_kl(m, a, val_idx)
    r["kl_train_recomputed"] = analytic_kl(m, a, train_idx)
    r["common_elbo_val"] = -float(m.get_elbo(indices=val_idx, batch_size=1024))
    r["common_rec_val"] = float(
        m.get_reconstruction_error(indices=val_idx, batch_size=1024)["reconstruction_loss"])
    # atlasvi's own evaluator on a file of the validation cells
    vfile = os.path.join(work, f"val_{tag}.h5ad")
    if not os.path.exists(vfile):
        a[val_idx].copy().write_h5ad(vfile)
    p = subprocess.run([args.atlasvi, "posterior", model_h5, vfile, "--elbo",
                        "--reconstruction-error", "--threads", str(args.threads)],
                       check=True, env=env, capture_output=True, text=True)
    post = json.loads(p.stdout.strip().splitlines()[-1])
    r["posterior_elbo_val"] = -post["elbo"]
    r["posterior_rec_val"] = post["reconstruction_loss"]
    return r


def run_scvi(a, ds, seed, epochs, work, args, val_idx, train_idx):
    import scvi
    import torch

    cfg = DATASETS[ds]
    tag = f"{ds}_s{seed}"
    scvi.settings.seed = seed
    torch.set_num_threads(args.threads)
    scvi.model.SCVI.setup_anndata(a, batch_key=cfg["batch"])
    m = scvi.model.SCVI(a)
    t0 = time.perf_counter()
    m.train(max_epochs=epochs, batch_size=128, accelerator="cpu", devices=1,
            check_val_every_n_epoch=1, enable_progress_bar=False,
            datasplitter_kwargs={"external_indexing": [train_idx, val_idx,
                                                       np.array([], dtype=np.int64)]})
    train_s = time.perf_counter() - t0
    h = m.history

    def last(k):
        return float(h[k].dropna().iloc[-1, 0])

    z = m.get_latent_representation()
    np.save(os.path.join(work, f"z_scvi_{tag}.npy"), z)
    r = dict(kind="run", dataset=ds, tool="scvi-tools", seed=seed,
             epochs=int(len(h["elbo_train"])), n_train=len(train_idx), n_val=len(val_idx),
             elbo_validation=last("elbo_validation"),
             reconstruction_loss_validation=last("reconstruction_loss_validation"),
             kl_local_validation=last("kl_local_validation"), elbo_train=last("elbo_train"),
             train_s=train_s, wall_s=train_s)
    r["common_elbo_val"] = -float(m.get_elbo(indices=val_idx, batch_size=1024))
    r["common_rec_val"] = float(
        m.get_reconstruction_error(indices=val_idx, batch_size=1024)["reconstruction_loss"])
    r["kl_val_recomputed"] = analytic_kl(m, a, val_idx)
    return r


def integration_metrics(a, ds, seeds, work, n_jobs):
    """scib-metrics Benchmarker over every run's latent: ({embedding: {metric: v}}, cells)."""
    import scanpy as sc

    cfg = DATASETS[ds]
    b = a.copy()
    keys = []
    for tool in ("atlasvi", "scvi"):
        for s in seeds:
            p = os.path.join(work, f"z_{tool}_{ds}_s{s}.npy")
            if os.path.exists(p):
                b.obsm[f"{tool}_s{s}"] = np.load(p)
                keys.append(f"{tool}_s{s}")
    if cfg.get("drop_label"):
        b = b[b.obs[cfg["labels"]].astype(str) != cfg["drop_label"]].copy()
        b.obs[cfg["labels"]] = b.obs[cfg["labels"]].astype(str).astype("category")
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    sc.tl.pca(b, n_comps=min(50, b.n_vars - 1, b.n_obs - 1))
    from scib_metrics.benchmark import Benchmarker

    bm = Benchmarker(b, batch_key=cfg["batch"], label_key=cfg["labels"],
                     embedding_obsm_keys=keys, pre_integrated_embedding_obsm_key="X_pca",
                     n_jobs=n_jobs, progress_bar=False)
    bm.benchmark()
    t = bm.get_results(min_max_scale=False)
    t = t[t.index != "Metric Type"]
    return {k: {c: float(v) for c, v in t.loc[k].items()} for k in keys}, int(b.n_obs)


# ---------------------------------------------------------------- report


def read_results(path):
    runs, mets = {}, {}
    if os.path.exists(path):
        for l in open(path):
            r = json.loads(l)
            if r["kind"] == "run":
                runs[(r["dataset"], r["tool"], r["seed"])] = r
            else:
                mets[r["dataset"]] = r
    return runs, mets


def spread(v):
    v = np.asarray([x for x in v if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return None
    return dict(mean=v.mean(), sd=v.std(ddof=1) if len(v) > 1 else 0.0,
                lo=v.min(), hi=v.max(), n=len(v))


def fmt(s, d=2):
    if s is None:
        return "-"
    return f"{s['mean']:.{d}f} ± {s['sd']:.{d}f}"


def report(work):
    runs, mets = read_results(os.path.join(work, "results.jsonl"))
    out = []
    cols = [("elbo_validation", "held-out -ELBO", 2),
            ("reconstruction_loss_validation", "held-out rec. loss", 2),
            ("kl_local_validation", "held-out KL", 2),
            ("common_elbo_val", "-ELBO, common evaluator", 2),
            ("train_s", "train s", 1)]
    out.append("| dataset | epochs | n_train/n_val | tool | seeds | " +
               " | ".join(c[1] for c in cols) + " |")
    out.append("|" + "---|" * (5 + len(cols)))
    summary = []
    for ds in DATASETS:
        per = {}
        for tool in ("atlasvi", "scvi-tools"):
            rs = [r for (d, t, s), r in sorted(runs.items()) if d == ds and t == tool]
            if not rs:
                continue
            per[tool] = {c: spread([r.get(c) for r in rs]) for c, _, _ in cols}
            out.append(f"| {ds} | {rs[0]['epochs']} | {rs[0]['n_train']}/{rs[0]['n_val']} | "
                       f"{tool} | {len(rs)} | " +
                       " | ".join(fmt(per[tool][c], d) for c, _, d in cols) + " |")
        if len(per) == 2:
            ea, es = per["atlasvi"]["elbo_validation"], per["scvi-tools"]["elbo_validation"]
            rel = (ea["mean"] - es["mean"]) / abs(es["mean"])
            summary.append((ds, rel, ea, es))
    out.append("")
    out.append("Held-out -ELBO, atlasvi vs scvi-tools (same validation cells):")
    out.append("")
    out.append("| dataset | atlasvi − scvi-tools | relative | within 1% | "
               "seed ranges (atlasvi; scvi-tools) |")
    out.append("|---|---|---|---|---|")
    for ds, rel, ea, es in summary:
        out.append(f"| {ds} | {ea['mean'] - es['mean']:+.2f} | {100 * rel:+.2f}% | "
                   f"{'yes' if abs(rel) <= 0.01 else 'NO'} | "
                   f"{ea['lo']:.2f}–{ea['hi']:.2f}; {es['lo']:.2f}–{es['hi']:.2f} |")
    # split check
    out.append("")
    out.append("Split check (atlasvi weights in scvi-tools, analytic KL on the reconstructed "
               "validation cells vs atlasvi's kl_local_validation; train cells for scale):")
    out.append("")
    out.append("| dataset | seed | atlasvi kl_local_validation | recomputed on val | "
               "recomputed on train |")
    out.append("|---|---|---|---|---|")
    for (d, t, s), r in sorted(runs.items()):
        if t == "atlasvi" and "kl_val_recomputed" in r:
            out.append(f"| {d} | {s} | {r['kl_local_validation']:.4f} | "
                       f"{r['kl_val_recomputed']:.4f} | {r['kl_train_recomputed']:.4f} |")
    # evaluator check
    out.append("")
    out.append("Evaluators on atlasvi's final weights, validation cells (one posterior sample "
               "per cell each): atlasvi's last-epoch metric, scvi-tools get_elbo on the same "
               "weights, atlasvi posterior --elbo:")
    out.append("")
    out.append("| dataset | seed | metric | scvi-tools get_elbo | atlasvi posterior |")
    out.append("|---|---|---|---|---|")
    for (d, t, s), r in sorted(runs.items()):
        if t == "atlasvi" and "posterior_elbo_val" in r:
            out.append(f"| {d} | {s} | {r['elbo_validation']:.2f} | "
                       f"{r['common_elbo_val']:.2f} | {r['posterior_elbo_val']:.2f} |")
    # integration metrics
    for ds, m in mets.items():
        tab = m["metrics"]
        names = list(next(iter(tab.values())).keys())
        out.append("")
        out.append(f"Integration metrics, {ds} (scib-metrics {m.get('version', '')}, "
                   f"{m.get('n_cells', '')} cells; mean ± sd over seeds; 'within' = "
                   f"|Δ mean| ≤ max(seed range of either tool)):")
        out.append("")
        out.append("| metric | atlasvi | scvi-tools | Δ mean | within spread |")
        out.append("|---|---|---|---|---|")
        for n in names:
            sa = spread([v[n] for k, v in tab.items() if k.startswith("atlasvi")])
            ss = spread([v[n] for k, v in tab.items() if k.startswith("scvi")])
            if sa is None or ss is None:
                continue
            dlt = sa["mean"] - ss["mean"]
            tol = max(sa["hi"] - sa["lo"], ss["hi"] - ss["lo"])
            out.append(f"| {n} | {fmt(sa, 3)} | {fmt(ss, 3)} | {dlt:+.3f} | "
                       f"{'yes' if abs(dlt) <= tol + 1e-12 else 'NO'} |")
    text = "\n".join(out) + "\n"
    with open(os.path.join(work, "report.md"), "w") as f:
        f.write(text)
    print(text)


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--atlasvi", default="build-fid/atlasvi")
    ap.add_argument("--work", default="/tmp/fid_train")
    ap.add_argument("--datasets", default="kang,starmap,heart,sim50k")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", default="",
                    help="per-dataset overrides, e.g. kang=20,starmap=100 (defaults: kang 10, "
                         "starmap 30, heart 50, sim50k 2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tools", default="atlasvi,scvi-tools")
    ap.add_argument("--no-metrics", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    if a.report_only:
        report(a.work)
        return 0
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.ERROR)
    import torch
    import scvi

    torch.set_num_threads(a.threads)
    scvi.settings.num_threads = a.threads
    scvi.settings.dl_num_workers = 0
    over = dict(kv.split("=") for kv in a.epochs.split(",") if kv)
    seeds = [int(s) for s in a.seeds.split(",")]
    tools = a.tools.split(",")
    res = os.path.join(a.work, "results.jsonl")

    def emit(r):
        with open(res, "a") as f:
            f.write(json.dumps(r, default=float) + "\n")
        print(json.dumps(r, default=float), flush=True)

    for ds in a.datasets.split(","):
        epochs = int(over.get(ds, DATASETS[ds]["epochs"]))
        adata, av_input = load_adata(ds, a.work, a.atlasvi)
        for seed in seeds:
            train_idx, val_idx = atlasvi_split(adata.n_obs, seed)
            if "atlasvi" in tools:
                emit(run_atlasvi(adata, ds, seed, epochs, av_input, a.work, a, val_idx,
                                 train_idx))
            if "scvi-tools" in tools:
                emit(run_scvi(adata, ds, seed, epochs, a.work, a, val_idx, train_idx))
        if not a.no_metrics:
            t0 = time.perf_counter()
            try:
                import scib_metrics

                tab, n_cells = integration_metrics(adata, ds, seeds, a.work, a.threads)
                emit(dict(kind="metrics", dataset=ds, version=scib_metrics.__version__,
                          n_cells=n_cells, metrics=tab,
                          seconds=time.perf_counter() - t0))
            except Exception as e:  # noqa: BLE001 - report and go on with the next dataset
                print(f"integration metrics failed on {ds}: {e!r}", file=sys.stderr)
    report(a.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
