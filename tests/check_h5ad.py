#!/usr/bin/python3
"""Reads the files written by atlasvi's C writers with anndata.read_h5ad (warnings are
errors) and compares their contents with what the C tests wrote.

usage: check_h5ad.py output DIR            files left by test_output
       check_h5ad.py simulate FILE N G B K a file written by `atlasvi simulate`
Exit 77 (CTest: skipped) when anndata is not importable."""
import sys
import warnings

try:
    import anndata
    import numpy as np
    import scipy.sparse as sp
except Exception as e:  # pragma: no cover
    print(f"check_h5ad: skipped, anndata/numpy/scipy not importable: {e}")
    sys.exit(77)

warnings.simplefilter("error")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def read(path):
    try:
        return anndata.read_h5ad(path)
    except Exception as e:
        failures.append(f"{path}: read_h5ad failed: {type(e).__name__}: {e}")
        print("FAIL:", failures[-1])
        return None


def obsm_expected(n, k, scale):
    i = np.arange(n, dtype=np.float32)[:, None]
    j = np.arange(k, dtype=np.float32)[None, :]
    return (scale * (i * np.float32(0.25) - j * np.float32(1.5))).astype(np.float32)


def rows_expected(r0, n, g):
    """The rows test_output.c's make_rows() writes."""
    dense = np.zeros((n, g), dtype=np.float32)
    for i in range(n):
        r = r0 + i
        cols = sorted(set((r + 3 * t) % g for t in range(r % 4)))
        for a, c in enumerate(cols):
            dense[i, c] = r + a + 1
    return dense


def check_output(d):
    n, g = 50, 12
    a = read(f"{d}/csr.h5ad")
    if a is not None:
        check(a.shape == (n, g), f"csr.h5ad shape {a.shape}")
        check(sp.isspmatrix_csr(a.X) and a.X.dtype == np.float32, "csr.h5ad X is float32 CSR")
        check(np.array_equal(a.X.toarray(), rows_expected(0, n, g)), "csr.h5ad X values")
        check(list(a.obs.columns) == ["batch", "n_counts", "barcode"], f"obs columns {list(a.obs.columns)}")
        check(str(a.obs["batch"].dtype) == "category", "batch is categorical")
        check(list(a.obs["batch"].cat.categories) == ["batch_0", "batch_1", "batch_2"], "batch categories")
        check(list(a.obs["batch"].cat.codes) == [i % 3 for i in range(n)], "batch codes")
        check(not a.obs["batch"].cat.ordered, "not ordered")
        check(np.allclose(a.obs["n_counts"].values, np.arange(n) * 1.5), "n_counts")
        check(a.obs["barcode"].iloc[3] == "BC-3-\u00e9", "utf-8 column")
        check(list(a.obs_names[:3]) == ["c0", "c1", "c2"], "obs names")
        check(list(a.var_names[-2:]) == ["G10", "G11"], "var names")
    a = read(f"{d}/csr_gen.h5ad")
    if a is not None:
        check(a.shape == (9, 5), "csr_gen shape")
        check(a.obs_names[8] == "cell_8" and a.var_names[4] == "gene_4", "generated names")
        check(np.array_equal(a.X.toarray(), rows_expected(0, 9, 5)), "csr_gen values")
    a = read(f"{d}/from_names.h5ad")
    if a is not None:
        check(a.shape == (n, g) and a.X is None, "from_names shape, no X")
        z = a.obsm["X_scVI"]
        check(z.dtype == np.float32 and np.array_equal(z, obsm_expected(n, 10, 1.0)), "X_scVI values")
        check(np.array_equal(a.layers["scvi_normalized"], obsm_expected(n, g, 0.5)), "layer values")
        check(a.obs_names[5] == "AAAC-5" and a.var_names[0] == "Gene0", "names")
    a = read(f"{d}/copied.h5ad")
    if a is not None:
        check(list(a.obs.columns) == ["batch", "n_counts", "barcode", "leiden"], "copied columns")
        le = a.obs["leiden"]
        check(le.isna().sum() == n // 2 and (le[1::2] == "1").all(), "leiden with missing codes")
        check(np.array_equal(a.obsm["X_scVI"], obsm_expected(n, 10, 1.0)), "copied X_scVI")
    a = read(f"{d}/inplace.h5ad")
    if a is not None:
        check(sorted(a.obsm.keys()) == ["X_old", "X_scVI"], f"obsm keys {list(a.obsm.keys())}")
        check(np.array_equal(a.obsm["X_scVI"], obsm_expected(n, 10, 1.0)), "in-place X_scVI replaced")
        check(np.array_equal(a.obsm["X_old"], obsm_expected(n, 8, 2.0)), "X_old untouched")
        check(np.array_equal(a.X.toarray(), rows_expected(0, n, g)), "X untouched")


def check_real(d):
    import os
    heart, kang = f"{d}/real_heart.h5ad", f"{d}/real_kang_inplace.h5ad"
    if os.path.exists(heart):
        a = read(heart)
        if a is not None:
            check(a.shape == (320, 136), f"real_heart shape {a.shape}")
            check("cell_type_ontology_term_id" in a.obs.columns, "copied CELLxGENE obs columns")
            check(np.array_equal(a.obsm["X_scVI"], obsm_expected(320, 10, 1.0)), "real_heart X_scVI")
    if os.path.exists(kang):
        a = read(kang)
        if a is not None:
            check(a.shape == (1556, 1267), "kang shape")
            check(np.array_equal(a.obsm["X_scVI"], obsm_expected(1556, 10, 1.0)), "kang X_scVI")
            check(list(a.obs.columns) == ["cluster_id", "sample_id", "group_id"], "kang obs kept")


def check_simulate(path, n, g, b, k):
    a = read(path)
    if a is None:
        return
    check(a.shape == (n, g), f"shape {a.shape}")
    check(sp.isspmatrix_csr(a.X) and a.X.dtype == np.float32, "X float32 CSR")
    check(list(a.obs.columns) == ["batch", "cell_type"], f"columns {list(a.obs.columns)}")
    check(list(a.obs["batch"].cat.categories) == [f"batch_{i}" for i in range(b)], "batch categories")
    check(list(a.obs["cell_type"].cat.categories) == [f"type_{i}" for i in range(k)], "type categories")
    check(a.obs_names[0] == "cell_0" and a.var_names[g - 1] == f"gene_{g - 1}", "names")
    x = a.X
    check(np.all(x.data == np.floor(x.data)) and np.all(x.data > 0), "positive integer counts")
    sparsity = 1 - x.nnz / (n * g)
    lib = np.asarray(x.sum(1)).ravel()
    print(f"check_h5ad: {path}: sparsity {sparsity:.3f}, median library size {np.median(lib):.0f}")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "output":
        check_output(sys.argv[2])
        check_real(sys.argv[2])
    elif len(sys.argv) == 7 and sys.argv[1] == "simulate":
        check_simulate(sys.argv[2], *map(int, sys.argv[3:]))
    else:
        print(__doc__)
        sys.exit(2)
    if failures:
        print(f"check_h5ad: {len(failures)} failure(s)")
        sys.exit(1)
    print("check_h5ad: anndata", anndata.__version__, "read everything, values match")


if __name__ == "__main__":
    main()
