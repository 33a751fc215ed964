"""Checks an `atlasvi de` CSV: scvi-tools' columns in order, rows sorted as scvi-tools
sorts them within each comparison, comparisons in group order, FDR calls consistent with
proba_de, and sanity on simulated data (top genes up-regulated in the raw counts, LFC in
line with the raw log ratio). Usage: de_check.py TABLE.csv MODE N_GROUPS N_GENES [LEVELS]"""
import sys

import numpy as np
import pandas as pd

path, mode, n_groups, n_genes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
levels = sys.argv[5].split(",") if len(sys.argv) > 5 else []
df = pd.read_csv(path, index_col=0)
raw = ["raw_mean1", "raw_mean2", "non_zeros_proportion1", "non_zeros_proportion2",
       "raw_normalized_mean1", "raw_normalized_mean2"]
if mode == "vanilla":
    cols = ["proba_m1", "proba_m2", "bayes_factor", "scale1", "scale2"] + raw
    key = "bayes_factor"
else:
    ci = []
    for lv in levels:
        ci += [f"lfc_confidence_interval_{lv}_min", f"lfc_confidence_interval_{lv}_max"]
    cols = (["proba_de", "proba_not_de", "bayes_factor", "scale1", "scale2", "pseudocounts",
             "delta", "lfc_mean", "lfc_median", "lfc_std", "lfc_min", "lfc_max"] + ci + raw
            + ["is_de_fdr_0.05"])
    key = "proba_de"
cols += ["comparison", "group1", "group2"]
errors = []
if list(df.columns) != cols:
    errors.append(f"columns {list(df.columns)} != {cols}")
if len(df) != n_groups * n_genes:
    errors.append(f"{len(df)} rows, expected {n_groups * n_genes}")
groups = list(dict.fromkeys(df["group1"]))
if mode == "change-pair":
    want = ["type_1", "type_0"]
    if groups != want or set(df["group2"]) != {"type_2"}:
        errors.append(f"groups {groups}, group2 {set(df['group2'])}")
elif groups != sorted(groups) or set(df["group2"]) != {"Rest"}:
    errors.append(f"groups {groups} not in category order, or group2 not Rest")
for g, t in df.groupby("group1", sort=False):
    if len(t) != n_genes or t.index.nunique() != n_genes:
        errors.append(f"{g}: {len(t)} rows, {t.index.nunique()} genes")
    if (np.diff(t[key].to_numpy()) > 0).any():
        errors.append(f"{g}: not sorted by {key} descending")
    if not (t["comparison"] == f"{g} vs {t['group2'].iloc[0]}").all():
        errors.append(f"{g}: comparison column")
    for a, b in [("scale1", None), ("scale2", None)]:
        s = t[a].sum()
        if not 0.98 < s < 1.02:
            errors.append(f"{g}: {a} sums to {s}, not 1")
    if not ((t["non_zeros_proportion1"] >= 0) & (t["non_zeros_proportion1"] <= 1)).all():
        errors.append(f"{g}: non_zeros_proportion1 out of [0, 1]")
    for c in ("raw_normalized_mean1", "raw_normalized_mean2"):
        s = t[c].sum()
        if abs(s - 1e4) > 1:
            errors.append(f"{g}: {c} sums to {s}, not 1e4")
    logr = np.log2((t["raw_normalized_mean1"] + 1) / (t["raw_normalized_mean2"] + 1))
    rank = pd.Series(np.arange(len(t)), index=t.index)
    # the genes whose raw data say DE (simulated markers of this type, or of the others)
    strong = (logr.abs() > 1) & ((t["raw_mean1"] > 0.5) | (t["raw_mean2"] > 0.5))
    up, down = strong & (logr > 0), strong & (logr < 0)
    if strong.sum() < 5:
        errors.append(f"{g}: only {strong.sum()} strongly DE genes in the raw data")
    if mode == "vanilla":
        if not np.allclose(t["proba_m1"] + t["proba_m2"], 1):
            errors.append(f"{g}: proba_m1 + proba_m2 != 1")
        # vanilla tests rho1 > rho2: up genes first, down genes last
        k = up.sum() + 10
        if (rank[up] < k).mean() < 0.75 or (rank[down] >= len(t) - down.sum() - 10).mean() < 0.75:
            errors.append(f"{g}: raw up genes at {list(rank[up])}, down at {list(rank[down])}")
    else:
        p = t["proba_de"].to_numpy()
        fdr = np.cumsum(1 - p) / np.arange(1, len(p) + 1)
        d = int((fdr <= 0.05).sum())
        flags = t["is_de_fdr_0.05"].to_numpy()
        if flags.dtype != bool or flags[:d].sum() != d or flags[d:].any():
            errors.append(f"{g}: is_de_fdr_0.05 does not flag the first {d} genes")
        if t["pseudocounts"].nunique() != 1 or not (t["delta"] == 0.25).all():
            errors.append(f"{g}: pseudocounts/delta not constant")
        if not ((t["lfc_min"] <= t["lfc_median"]) & (t["lfc_median"] <= t["lfc_max"])).all():
            errors.append(f"{g}: lfc min <= median <= max fails")
        for lv in levels:
            lo, hi = t[f"lfc_confidence_interval_{lv}_min"], t[f"lfc_confidence_interval_{lv}_max"]
            if not ((t["lfc_min"] <= lo) & (lo <= hi) & (hi <= t["lfc_max"])).all():
                errors.append(f"{g}: HPD {lv} outside [min, max]")
        # change mode tests |LFC| > delta: the strongly DE genes first, LFC of the right sign
        if (rank[strong] < strong.sum() + 15).mean() < 0.75:
            errors.append(f"{g}: raw DE genes at ranks {list(rank[strong])}")
        agree = (np.sign(t["lfc_mean"][strong]) == np.sign(logr[strong])).mean()
        rho = t["lfc_mean"][strong].rank().corr(logr[strong].rank())
        if agree < 0.9 or not rho > 0.7:
            errors.append(f"{g}: LFC sign agreement {agree:.2f}, Spearman {rho:.3f}")
for e in errors:
    print("de_check:", e)
sys.exit(1 if errors else 0)
