#!/usr/bin/env python3
"""Expected values for tests/test_hvg.c: scanpy's highly_variable_genes(flavor="seurat_v3")
on a shared data file, run by hand (needs scanpy and scikit-misc) and committed:

  python3 tests/make_hvg_expected.py [DATA_DIR]

writes tests/hvg_expected/<case>.tsv, one line per gene in file order:
  index  name  means  variances  variances_norm  highly_variable_rank  highly_variable
  highly_variable_nbatches
(rank "nan" when the gene is in no batch's top n; nbatches 1/0 without a batch key), and
tests/hvg_expected/loess_<case>.tsv with the inputs and fitted values of skmisc's loess for
the first batch (x y fitted), so the loess can be compared on its own. A header line
starting with '#' names the file, the key and n_top_genes.
"""
import os
import sys
import warnings

import numpy as np
import scanpy as sc
from skmisc.loess import loess

warnings.filterwarnings("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "shared", "data")

CASES = [
    ("kang_ctrl_nobatch", "real_pbmc_kang18_ctrl_12261x1287.h5ad", None, 500),
    ("kang_ctrl_sample", "real_pbmc_kang18_ctrl_12261x1287.h5ad", "sample_id", 500),
    ("kang_ctrlstim_nobatch", "real_pbmc_kang18_ctrlstim_1556x1267.h5ad", None, 300),
]


def main():
    out = os.path.join(HERE, "hvg_expected")
    os.makedirs(out, exist_ok=True)
    for case, fname, key, ntop in CASES:
        a = sc.read_h5ad(os.path.join(DATA, fname))
        df = sc.pp.highly_variable_genes(
            a, flavor="seurat_v3", n_top_genes=ntop, batch_key=key, span=0.3, inplace=False
        )
        nb = df["highly_variable_nbatches"] if key else df["highly_variable"].astype(int)
        with open(os.path.join(out, case + ".tsv"), "w") as f:
            f.write(f"# {fname} batch_key={key or '-'} n_top_genes={ntop} scanpy={sc.__version__}\n")
            for i, name in enumerate(a.var_names):
                f.write(
                    "%d\t%s\t%.17g\t%.17g\t%.17g\t%s\t%d\t%d\n"
                    % (
                        i, name, df["means"].iloc[i], df["variances"].iloc[i],
                        df["variances_norm"].iloc[i],
                        "nan" if np.isnan(df["highly_variable_rank"].iloc[i])
                        else "%.1f" % df["highly_variable_rank"].iloc[i],
                        int(df["highly_variable"].iloc[i]), int(nb.iloc[i]),
                    )
                )
        # the loess alone, on the genes of the whole file (first batch without a key)
        X = a.X
        mean = np.asarray(X.mean(axis=0)).ravel().astype(np.float64)
        sq = np.asarray(X.multiply(X).mean(axis=0)).ravel().astype(np.float64)
        n = X.shape[0]
        var = (sq - mean**2) * n / (n - 1)
        nc = var > 0
        x, y = np.log10(mean[nc]), np.log10(var[nc])
        m = loess(x, y, span=0.3, degree=2)
        m.fit()
        if key is None:
            with open(os.path.join(out, "loess_" + case + ".tsv"), "w") as f:
                f.write(f"# {fname} all cells, genes with variance > 0: x y fitted\n")
                for xi, yi, fi in zip(x, y, m.outputs.fitted_values):
                    f.write("%.17g\t%.17g\t%.17g\n" % (xi, yi, fi))
        print(case, int(df["highly_variable"].sum()), "selected")


if __name__ == "__main__":
    main()
