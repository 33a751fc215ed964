"""Differential expression: atlasvi against scvi-tools 1.4.2 on STARmap mPFC.

Run by hand with the pyenv python3 (scvi-tools installed):

    python3 benchmarks/de_fidelity.py --atlasvi build/atlasvi --work /tmp/de_fid

Steps:
 1. STARmap (/work/shared/data/starmap_mpfc_3704x158.loom: batch BatchID, labels Clusters)
    is written as .h5ad (counts in X, BatchID as a string category, Clusters as is).
 2. atlasvi trains scVI (batch BatchID, defaults otherwise, --epochs epochs).
 3. "same weights": the atlasvi weights (params/ and buffers/ of the model file, already
    under scvi-tools' state-dict names in PyTorch layout) are loaded into a scvi-tools SCVI
    built on the same file, so DE is compared with training taken out: both tools run
    differential_expression(groupby="Clusters") one-vs-rest, vanilla and change mode, on
    identical models. The only differences left are the Monte-Carlo draws (5000 per group,
    different random streams) and float32 vs float64 arithmetic.
 4. "separate training": scvi-tools also trains its own SCVI with the same settings and
    its DE is compared with atlasvi's DE of the atlasvi model (loose: two trainings).

Reported per comparison: Spearman of lfc_mean (change mode), of bayes_factor (vanilla) and
of scale1, and the overlap of the top-20 genes (change mode: top 20 by lfc_mean among
genes up-regulated; vanilla: top 20 by bayes_factor). Prints a JSON summary and a markdown
table for docs/fidelity.md.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd


def write_h5ad(loom, out):
    import anndata as ad
    import h5py

    with h5py.File(loom, "r") as f:
        x = f["matrix"][:].T.astype(np.float32)
        genes = [g.decode() for g in f["row_attrs/Gene"][:]]
        batch = f["col_attrs/BatchID"][:].ravel().astype(int).astype(str)
        clusters = [c.decode() for c in f["col_attrs/Clusters"][:]]
    obs = pd.DataFrame(
        {"BatchID": pd.Categorical(batch), "Clusters": pd.Categorical(clusters)},
        index=[str(i) for i in range(x.shape[0])],
    )
    a = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=genes))
    a.write_h5ad(out)
    return a


def load_atlasvi_weights(model, path):
    import h5py
    import torch

    sd = model.module.state_dict()
    with h5py.File(path, "r") as f:
        for grp in ("params", "buffers"):
            for k in f[grp]:
                v = torch.as_tensor(f[grp][k][:])
                if k not in sd:
                    continue
                sd[k] = v.reshape(sd[k].shape).to(sd[k].dtype)
    model.module.load_state_dict(sd)
    model.is_trained_ = True
    model.module.eval()


def top_overlap(a, b, key, n=20, up_only=False):
    if up_only:
        a, b = a[a["lfc_mean"] > 0], b[b["lfc_mean"] > 0]
    ta = set(a.sort_values(key, ascending=False).index[:n])
    tb = set(b.sort_values(key, ascending=False).index[:n])
    return len(ta & tb) / n


def compare(ref, ours, mode):
    rows = []
    for g in ref["group1"].astype(str).unique():
        r = ref[ref["group1"].astype(str) == g]
        o = ours[ours["group1"].astype(str) == g].reindex(r.index)
        row = {"group": g, "n_genes": len(r)}
        row["scale1_spearman"] = r["scale1"].corr(o["scale1"], method="spearman")
        if mode == "change":
            row["lfc_mean_spearman"] = r["lfc_mean"].corr(o["lfc_mean"], method="spearman")
            row["proba_de_spearman"] = r["proba_de"].corr(o["proba_de"], method="spearman")
            row["top20_lfc_up"] = top_overlap(r, o, "lfc_mean", up_only=True)
            row["is_de_agree"] = (r["is_de_fdr_0.05"] == o["is_de_fdr_0.05"]).mean()
        else:
            row["bf_spearman"] = r["bayes_factor"].corr(o["bayes_factor"], method="spearman")
            row["top20_bf"] = top_overlap(r, o, "bayes_factor")
        for c in ("raw_mean1", "raw_normalized_mean1", "non_zeros_proportion2"):
            row[f"{c}_maxrel"] = float(
                ((r[c] - o[c]).abs() / (r[c].abs() + 1e-12)).max()
            )
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(t):
    cols = list(t.columns)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, (float, np.floating)) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in t.itertuples(index=False)]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--atlasvi", default="build/atlasvi")
    ap.add_argument("--loom", default="/work/shared/data/starmap_mpfc_3704x158.loom")
    ap.add_argument("--work", default="/tmp/de_fidelity")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-scvi-train", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)

    import torch

    torch.set_num_threads(a.threads)
    import scvi

    scvi.settings.seed = a.seed
    scvi.settings.dl_num_workers = 0
    h5ad = os.path.join(a.work, "starmap.h5ad")
    adata = write_h5ad(a.loom, h5ad)

    def av(*args):
        t0 = time.perf_counter()
        subprocess.run([a.atlasvi, *args], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0

    model_h5 = os.path.join(a.work, "atlasvi_model.h5")
    t_av_train = av("train", h5ad, "--batch-key", "BatchID", "--max-epochs", str(a.epochs),
                    "--model-out", model_h5, "--no-progress", "--threads", str(a.threads),
                    "--seed", str(a.seed))
    out = {}
    t_av = {}
    for mode in ("vanilla", "change"):
        csv = os.path.join(a.work, f"atlasvi_{mode}.csv")
        t_av[mode] = av("de", model_h5, h5ad, "--groupby", "Clusters", "--mode", mode,
                        "--output", csv, "--threads", str(a.threads))
        out[mode] = pd.read_csv(csv, index_col=0, keep_default_na=False,
                                na_values=[""])

    # same weights in scvi-tools
    scvi.model.SCVI.setup_anndata(adata, batch_key="BatchID")
    same = scvi.model.SCVI(adata)
    load_atlasvi_weights(same, model_h5)
    ref_same, t_ref = {}, {}
    for mode in ("vanilla", "change"):
        t0 = time.perf_counter()
        ref_same[mode] = same.differential_expression(groupby="Clusters", mode=mode,
                                                      silent=True)
        t_ref[mode] = time.perf_counter() - t0
        ref_same[mode].to_csv(os.path.join(a.work, f"scvi_same_{mode}.csv"))

    results = {"epochs": a.epochs, "atlasvi_train_s": t_av_train, "atlasvi_de_s": t_av,
               "scvi_de_s": t_ref}
    tables = {}
    for mode in ("vanilla", "change"):
        tables[f"same_{mode}"] = compare(ref_same[mode], out[mode], mode)

    if not a.skip_scvi_train:
        own = scvi.model.SCVI(adata)
        t0 = time.perf_counter()
        own.train(max_epochs=a.epochs, accelerator="cpu", devices=1, enable_progress_bar=False)
        results["scvi_train_s"] = time.perf_counter() - t0
        for mode in ("vanilla", "change"):
            ref = own.differential_expression(groupby="Clusters", mode=mode, silent=True)
            ref.to_csv(os.path.join(a.work, f"scvi_own_{mode}.csv"))
            tables[f"separate_{mode}"] = compare(ref, out[mode], mode)
        # scvi-tools against itself (two trainings with different seeds): the noise floor
        scvi.settings.seed = a.seed + 1
        own2 = scvi.model.SCVI(adata)
        own2.train(max_epochs=a.epochs, accelerator="cpu", devices=1, enable_progress_bar=False)
        ref2 = own2.differential_expression(groupby="Clusters", mode="change", silent=True)
        ref1 = pd.read_csv(os.path.join(a.work, "scvi_own_change.csv"), index_col=0,
                           keep_default_na=False, na_values=[""])
        tables["scvi_vs_scvi_change"] = compare(ref1, ref2, "change")

    for k, t in tables.items():
        t.to_csv(os.path.join(a.work, f"compare_{k}.csv"), index=False)
        num = t.drop(columns=["group"]).median(numeric_only=True)
        mn = t.drop(columns=["group"]).min(numeric_only=True)
        results[k] = {"median": num.round(4).to_dict(), "min": mn.round(4).to_dict()}
        print(f"\n### {k}\n")
        print(markdown(t))
    print(json.dumps(results, indent=1, default=float))
    with open(os.path.join(a.work, "summary.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    sys.exit(main())
