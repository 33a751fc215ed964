#!/usr/bin/python3
"""Expected values for the io/ reader tests, established independently of the C code
with h5py, numpy and scipy (Debian's /usr/bin/python3).

  /usr/bin/python3 tests/make_io_expected.py [DATA_DIR]   > tests/io_expected/expected.txt
      values of every shared data file that holds an RNA matrix (run by hand, committed)
  /usr/bin/python3 tests/make_io_expected.py --fixtures DIR
      writes synthetic fixtures (LZF, gzip, CSC, dense layer, legacy encodings, 10x v2,
      unsorted and duplicated Matrix Market, an unknown filter) into DIR together with
      DIR/expected.txt, which the C test compares in the same way (run by the test).

Format: one record per line, fields separated by tabs:
  file PATH / layer NAME|- / format F / shape N G / nnz K / sum S / rowsum R S /
  probe R C V / obsname I NAME / varname I NAME / cat KEY N + catv NAME COUNT lines
  (file order) / strcat KEY N + catv lines (sorted, for string columns) /
  num KEY SUM NMISSING / end
"""
import gzip
import os
import sys

import h5py
import numpy as np
import scipy.io
import scipy.sparse as sp


def s(x):
    return x.decode() if isinstance(x, bytes) else str(x)


def strings(ds):
    return [s(v) for v in ds[()].reshape(-1)]


def clean(m):
    m = sp.csr_matrix(m, dtype=np.float64)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.sort_indices()
    return m


def fmt(v):
    return repr(float(v))


class Out:
    def __init__(self):
        self.lines = []

    def rec(self, *fields):
        self.lines.append("\t".join(str(f) for f in fields))


def matrix_record(o, rel, layer, fmt_name, m, obs_names, var_names):
    m = clean(m)
    n, g = m.shape
    o.rec("file", rel)
    o.rec("layer", layer or "-")
    o.rec("format", fmt_name)
    o.rec("shape", n, g)
    o.rec("nnz", m.nnz)
    o.rec("sum", fmt(m.sum()))
    for r in sorted(set([0, 1, 2, n - 1])):
        if 0 <= r < n:
            o.rec("rowsum", r, fmt(m[r].sum()))
    coo = m.tocoo()
    if m.nnz:
        for k in np.linspace(0, m.nnz - 1, 8).astype(int):
            o.rec("probe", coo.row[k], coo.col[k], fmt(coo.data[k]))
    dense_rows = {}
    for r in (0, n // 2, n - 1):
        row = m[r].toarray().ravel()
        zeros = np.nonzero(row == 0)[0]
        if len(zeros):
            o.rec("probe", r, zeros[len(zeros) // 2], fmt(0.0))
        dense_rows[r] = row
    for i in sorted(set([0, 1, n - 1])):
        o.rec("obsname", i, obs_names[i])
    for i in sorted(set([0, 1, g - 1])):
        o.rec("varname", i, var_names[i])


def cat_record(o, key, codes, cats):
    codes = np.asarray(codes).reshape(-1)
    o.rec("cat", key, len(cats))
    for k, c in enumerate(cats):
        o.rec("catv", c, int((codes == k).sum()))


def strcat_record(o, key, values):
    vals, counts = np.unique(np.array(values, dtype=object).astype(str), return_counts=True)
    o.rec("strcat", key, len(vals))
    for v, c in zip(vals, counts):
        o.rec("catv", v, int(c))


def num_record(o, key, values):
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    o.rec("num", key, fmt(np.nansum(v)), int(np.isnan(v).sum()))


def cat_names(ds):
    vals = ds[()]
    if vals.dtype.kind in "iuf":
        return [str(int(x)) if float(x).is_integer() else repr(float(x)) for x in vals]
    return [s(x) for x in vals]


def h5ad_index(grp):
    name = s(grp.attrs.get("_index", "_index"))
    if name not in grp:
        name = "index"
    return strings(grp[name])


def h5ad_matrix(f, path):
    x = f[path]
    if isinstance(x, h5py.Dataset):
        return sp.csr_matrix(x[()].astype(np.float64))
    enc = s(x.attrs.get("encoding-type", "")) or (s(x.attrs.get("h5sparse_format", "")) + "_matrix")
    shape = tuple(int(v) for v in x.attrs.get("shape", x.attrs.get("h5sparse_shape")))
    cls = sp.csr_matrix if enc == "csr_matrix" else sp.csc_matrix
    return cls((x["data"][()].astype(np.float64), x["indices"][()], x["indptr"][()]), shape=shape)


def h5ad_obs_columns(o, f, keys):
    obs = f["obs"]
    for key in keys:
        node = obs[key]
        if isinstance(node, h5py.Group):
            cat_record(o, key, node["codes"][()], cat_names(node["categories"]))
        elif "categories" in node.attrs:
            cat_record(o, key, node[()], cat_names(f[node.attrs["categories"]]))
        elif node.dtype.kind in "OSU":
            strcat_record(o, key, strings(node))
        else:
            num_record(o, key, node[()])


def do_h5ad(o, root, rel, layer=None, cols=()):
    with h5py.File(os.path.join(root, rel), "r") as f:
        path = "X" if not layer else ("raw/X" if layer == "raw" else "layers/" + layer)
        var = f["raw/var"] if layer == "raw" else f["var"]
        m = h5ad_matrix(f, path)
        matrix_record(o, rel, layer, "h5ad", m, h5ad_index(f["obs"]), h5ad_index(var))
        h5ad_obs_columns(o, f, cols)
    o.rec("end")


def do_loom(o, root, rel):
    with h5py.File(os.path.join(root, rel), "r") as f:
        m = sp.csr_matrix(f["matrix"][()].T.astype(np.float64))
        ca = f["col_attrs"]
        obs = strings(ca["CellID"]) if "CellID" in ca else [str(i) for i in range(m.shape[0])]
        var = strings(f["row_attrs/Gene"])
        matrix_record(o, rel, None, "loom", m, obs, var)
        strcat_record(o, "Clusters", strings(ca["Clusters"]))
        num_record(o, "BatchID", ca["BatchID"][()])
    o.rec("end")


def tenx_matrix(f, grp="matrix", keep="Gene Expression"):
    g = f[grp]
    nf, nb = (int(v) for v in g["shape"][()])
    m = sp.csr_matrix((g["data"][()].astype(np.float64), g["indices"][()], g["indptr"][()]), shape=(nb, nf))
    if "features" in g:
        names = strings(g["features/name"])
        types = strings(g["features/feature_type"]) if "feature_type" in g["features"] else ["Gene Expression"] * nf
    else:
        names = strings(g["gene_names"])
        types = ["Gene Expression"] * nf
    if keep == "all" or grp != "matrix":
        sel = np.arange(nf)
    else:
        sel = np.array([i for i in range(nf) if types[i] == keep], dtype=int)
    return m[:, sel], strings(g["barcodes"]), [names[i] for i in sel]


def do_10x(o, root, rel, layer=None, grp="matrix"):
    with h5py.File(os.path.join(root, rel), "r") as f:
        m, obs, var = tenx_matrix(f, grp, layer or "Gene Expression")
        matrix_record(o, rel, layer, "10x-h5", m, obs, var)
    o.rec("end")


def read_lines(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rt") as fh:
        return [line.rstrip("\n").split("\t") for line in fh if line.strip()]


def do_mtx(o, root, rel, layer=None):
    d = os.path.join(root, rel)

    def pick(*names):
        for n in names:
            if os.path.exists(os.path.join(d, n)):
                return os.path.join(d, n)

    mat = scipy.io.mmread(pick("matrix.mtx.gz", "matrix.mtx"))
    feats = read_lines(pick("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv"))
    bcs = [r[0] for r in read_lines(pick("barcodes.tsv.gz", "barcodes.tsv"))]
    m = sp.csr_matrix(sp.coo_matrix(mat).T)  # coo -> csr sums duplicates
    keep = layer or "Gene Expression"
    sel = [i for i, r in enumerate(feats) if len(r) < 3 or keep == "all" or r[2] == keep]
    matrix_record(o, rel, layer, "mtx", m[:, sel], bcs, [feats[i][1 if len(feats[i]) > 1 else 0] for i in sel])
    o.rec("end")


def shared(root):
    o = Out()
    hca = ["assay_ontology_term_id", "cell_type_ontology_term_id", "donor_id", "is_primary_data",
           "genetic_ancestry_African"]
    do_h5ad(o, root, "heart_hca_fibro_endo_320x136.h5ad", None, hca)
    do_h5ad(o, root, "heart_hca_fibro_endo_320x136.h5ad", "raw", ["tissue_type"])
    do_h5ad(o, root, "pbmc10k_cite_200x16727.h5ad", None, ["n_genes", "percent_mito", "n_counts"])
    do_h5ad(o, root, "pbmc_multiome_labeled_rna_100x200.h5ad", None, ["celltype"])
    do_h5ad(o, root, "pbmc_multiome_labeled_atac_100x200.h5ad", None, ["celltype"])
    do_h5ad(o, root, "real_pbmc_kang18_ctrl_12261x1287.h5ad", None, ["sample_id", "cluster_id", "tsne1"])
    do_h5ad(o, root, "real_pbmc_kang18_ctrlstim_1556x1267.h5ad", None, ["cluster_id", "sample_id", "group_id"])
    do_loom(o, root, "starmap_mpfc_3704x158.loom")
    do_10x(o, root, "tenx_v3_chr21/filtered_feature_bc_matrix.h5")
    do_mtx(o, root, "tenx_v3_chr21/filtered_feature_bc_matrix")
    do_10x(o, root, "pbmc_gse164378_rna50_adt30_200cells_10x.h5")
    do_10x(o, root, "pbmc_gse164378_rna50_adt30_200cells_10x.h5", "Antibody Capture")
    do_10x(o, root, "visium_human_subset/filtered_feature_bc_matrix.h5")
    return o


# ---------------------------------------------------------------- synthetic fixtures

def vlen(f, path, values):
    d = f.create_dataset(path, data=np.array(values, dtype=object), dtype=h5py.string_dtype())
    return d


def enc(obj, t, v):
    obj.attrs["encoding-type"] = t
    obj.attrs["encoding-version"] = v


def counts(rng, n, g, density):
    m = sp.random(n, g, density=density, format="csr", random_state=rng,
                  data_rvs=lambda k: rng.integers(1, 20, size=k)).astype(np.float32)
    m.sort_indices()
    return m


def write_df(f, path, index, cols):
    grp = f.create_group(path)
    enc(grp, "dataframe", "0.2.0")
    grp.attrs["_index"] = "_index"
    vlen(grp, "_index", index)
    order = []
    for key, kind, val in cols:
        order.append(key)
        if kind == "cat":
            codes, cats = val
            c = grp.create_group(key)
            enc(c, "categorical", "0.2.0")
            c.attrs["ordered"] = False
            c.create_dataset("codes", data=np.asarray(codes, dtype=np.int8))
            if np.asarray(cats).dtype.kind in "iuf":
                c.create_dataset("categories", data=np.asarray(cats))
            else:
                vlen(c, "categories", cats)
        elif kind == "str":
            vlen(grp, key, val)
        elif kind == "nullint":
            values, mask = val
            c = grp.create_group(key)
            enc(c, "nullable-integer", "0.1.0")
            c.create_dataset("values", data=np.asarray(values, dtype=np.int64))
            c.create_dataset("mask", data=np.asarray(mask, dtype=bool))
        else:
            grp.create_dataset(key, data=val)
    if order:
        grp.attrs["column-order"] = np.array(order, dtype=object)
    else:
        grp.attrs.create("column-order", data=np.zeros(0, dtype=np.float64))


def write_sparse(f, path, m, fmt_name, compression=None, data_dtype=None, idx_dtype=None, ptr_dtype=None):
    grp = f.create_group(path)
    enc(grp, fmt_name + "_matrix", "0.1.0")
    grp.attrs["shape"] = np.array(m.shape, dtype=np.int64)
    kw = dict(compression=compression, maxshape=(None,)) if compression else dict(maxshape=(None,))
    grp.create_dataset("data", data=m.data.astype(data_dtype or m.data.dtype), **kw)
    grp.create_dataset("indices", data=m.indices.astype(idx_dtype or np.int32), **kw)
    grp.create_dataset("indptr", data=m.indptr.astype(ptr_dtype or np.int64), **kw)


def fixtures(d):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(7)
    o = Out()
    # 1. LZF-compressed CSR X (>= 100 KB of compressible data), gzip int32 layer, LZF dense layer.
    n, g = 3000, 400
    m = counts(rng, n, g, 0.1)  # 120k non-zeros: 480 KB of values
    obs = ["cell%d" % i for i in range(n)]
    var = ["gene%d" % i for i in range(g)]
    batch = rng.integers(-1, 3, size=n)
    with h5py.File(os.path.join(d, "lzf.h5ad"), "w") as f:
        enc(f, "anndata", "0.1.0")
        write_sparse(f, "X", m, "csr", compression="lzf")
        lay = f.create_group("layers")
        enc(lay, "dict", "0.1.0")
        write_sparse(f, "layers/counts", m, "csr", compression="gzip", data_dtype=np.int32,
                     idx_dtype=np.int64, ptr_dtype=np.int32)
        f.create_dataset("layers/dense", data=m.toarray(), chunks=(50, g), compression="lzf")
        write_df(f, "obs", obs, [("batch", "cat", (batch, ["a", "b", "c"])),
                                 ("level", "cat", (rng.integers(0, 3, size=n), [10, 20, 30])),
                                 ("tag", "str", ["t%d" % (i % 5) for i in range(n)]),
                                 ("score", "num", rng.normal(size=n)),
                                 ("maybe", "nullint", (np.arange(n), np.arange(n) % 7 == 0))])
        write_df(f, "var", var, [])
    matrix_record(o, "lzf.h5ad", None, "h5ad", m, obs, var)
    cat_record(o, "batch", batch, ["a", "b", "c"])
    with h5py.File(os.path.join(d, "lzf.h5ad"), "r") as f:
        cat_record(o, "level", f["obs/level/codes"][()], ["10", "20", "30"])
        strcat_record(o, "tag", strings(f["obs/tag"]))
        num_record(o, "score", f["obs/score"][()])
        num_record(o, "maybe", np.where(f["obs/maybe/mask"][()], np.nan, f["obs/maybe/values"][()]))
    o.rec("end")
    matrix_record(o, "lzf.h5ad", "counts", "h5ad", m, obs, var)
    o.rec("end")
    matrix_record(o, "lzf.h5ad", "dense", "h5ad", m, obs, var)
    o.rec("end")

    # 2. CSC X with unsorted row indices, duplicates and explicit zeros, float64 data; raw with
    #    more genes; legacy-style named index.
    n, g = 200, 150
    base = counts(rng, n, g, 0.2)
    csc = sp.csc_matrix(base)
    data, indices, indptr = csc.data.astype(np.float64).copy(), csc.indices.copy(), csc.indptr.copy()
    for j in range(g):  # reverse rows inside every column, zero one value
        a, b = indptr[j], indptr[j + 1]
        indices[a:b] = indices[a:b][::-1].copy()
        data[a:b] = data[a:b][::-1].copy()
        if b > a and j % 3 == 0:
            data[a] = 0.0
    csc2 = sp.csc_matrix((data, indices, indptr), shape=(n, g))
    raw = counts(rng, n, g + 30, 0.15)
    obs = ["c%d" % i for i in range(n)]
    with h5py.File(os.path.join(d, "csc.h5ad"), "w") as f:
        grp = f.create_group("X")
        enc(grp, "csc_matrix", "0.1.0")
        grp.attrs["shape"] = np.array([n, g], dtype=np.int32)
        grp.create_dataset("data", data=data, maxshape=(None,))
        grp.create_dataset("indices", data=indices.astype(np.int64), maxshape=(None,))
        grp.create_dataset("indptr", data=indptr.astype(np.int64), maxshape=(None,))
        write_df(f, "obs", obs, [])
        write_df(f, "var", ["g%d" % i for i in range(g)], [])
        r = f.create_group("raw")
        enc(r, "raw", "0.1.0")
        write_sparse(f, "raw/X", raw, "csr", data_dtype=np.int64)
        write_df(f, "raw/var", ["rg%d" % i for i in range(g + 30)], [])
    matrix_record(o, "csc.h5ad", None, "h5ad", csc2, obs, ["g%d" % i for i in range(g)])
    o.rec("end")
    matrix_record(o, "csc.h5ad", "raw", "h5ad", raw, obs, ["rg%d" % i for i in range(g + 30)])
    o.rec("end")

    # 3. Legacy (anndata 0.7): h5sparse_format group, `index` dataset, codes with an
    #    object-reference categories attribute (numeric categories).
    n, g = 120, 60
    m = counts(rng, n, g, 0.3)
    # unsorted + duplicate entries in row 0
    ind, dat, ptr = m.indices.copy(), m.data.copy(), m.indptr.copy()
    a, b = ptr[0], ptr[1]
    if b - a >= 2:
        ind[a:b] = ind[a:b][::-1].copy()
        dat[a:b] = dat[a:b][::-1].copy()
        ind[a + 1] = ind[a]  # duplicate column: values are summed by the reader
    legacy = sp.csr_matrix((dat, ind, ptr), shape=(n, g))
    codes = rng.integers(0, 4, size=n)
    obs = ["L%d" % i for i in range(n)]
    with h5py.File(os.path.join(d, "legacy.h5ad"), "w") as f:
        grp = f.create_group("X")
        grp.attrs["h5sparse_format"] = "csr"
        grp.attrs["h5sparse_shape"] = np.array([n, g])
        grp.create_dataset("data", data=dat)
        grp.create_dataset("indices", data=ind)
        grp.create_dataset("indptr", data=ptr)
        ob = f.create_group("obs")
        enc(ob, "dataframe", "0.1.0")
        ob.attrs["_index"] = "index"
        ob.attrs["column-order"] = np.array(["group"], dtype=object)
        vlen(ob, "index", obs)
        cats = ob.create_group("__categories").create_dataset("group", data=np.array([0, 1, 2, 3]))
        cats.attrs["ordered"] = False
        c = ob.create_dataset("group", data=codes.astype(np.int8))
        c.attrs["categories"] = cats.ref
        va = f.create_group("var")
        enc(va, "dataframe", "0.1.0")
        va.attrs["_index"] = "index"
        va.attrs.create("column-order", data=np.zeros(0, dtype=np.float64))
        va.create_dataset("index", data=np.array(["v%d" % i for i in range(g)], dtype="S"))
    matrix_record(o, "legacy.h5ad", None, "h5ad", legacy, obs, ["v%d" % i for i in range(g)])
    cat_record(o, "group", codes, ["0", "1", "2", "3"])
    o.rec("end")

    # 4. 10x v2 (per-genome groups), two genomes.
    with h5py.File(os.path.join(d, "tenx_v2.h5"), "w") as f:
        mats = {}
        for gname, nf, nb in (("hg19", 40, 30), ("mm10", 25, 30)):
            mm = counts(rng, nb, nf, 0.25)  # cells x genes CSR == genes x cells CSC
            mats[gname] = mm
            gg = f.create_group(gname)
            gg.create_dataset("data", data=mm.data.astype(np.int32), compression="gzip")
            gg.create_dataset("indices", data=mm.indices.astype(np.int64))
            gg.create_dataset("indptr", data=mm.indptr.astype(np.int64))
            gg.create_dataset("shape", data=np.array([nf, nb], dtype=np.int32))
            gg.create_dataset("barcodes", data=np.array(["%s-bc%d" % (gname, i) for i in range(nb)], dtype="S"))
            gg.create_dataset("genes", data=np.array(["%s-ENS%d" % (gname, i) for i in range(nf)], dtype="S"))
            gg.create_dataset("gene_names", data=np.array(["%s-G%d" % (gname, i) for i in range(nf)], dtype="S"))
    for gname in ("hg19", "mm10"):
        mm = mats[gname]
        matrix_record(o, "tenx_v2.h5", gname, "10x-h5", mm, ["%s-bc%d" % (gname, i) for i in range(mm.shape[0])],
                      ["%s-G%d" % (gname, i) for i in range(mm.shape[1])])
        o.rec("end")

    # 5. Matrix Market v2 folder: plain files, genes.tsv, entries shuffled, a duplicate.
    nf, nb = 50, 40
    mm = counts(rng, nb, nf, 0.2)
    coo = mm.tocoo()
    order = rng.permutation(coo.nnz)
    rows, cols, vals = list(coo.col[order] + 1), list(coo.row[order] + 1), list(coo.data[order])
    rows.append(rows[0]); cols.append(cols[0]); vals.append(2.0)  # duplicate: summed
    md = os.path.join(d, "mex_v2")
    os.makedirs(md, exist_ok=True)
    with open(os.path.join(md, "matrix.mtx"), "w") as fh:
        fh.write("%%MatrixMarket matrix coordinate integer general\n%comment\n")
        fh.write("%d %d %d\n" % (nf, nb, len(rows)))
        for r, c, v in zip(rows, cols, vals):
            fh.write("%d %d %d\n" % (r, c, int(v)))
    with open(os.path.join(md, "genes.tsv"), "w") as fh:
        fh.writelines("ENSG%05d\tGENE%d\n" % (i, i) for i in range(nf))
    with open(os.path.join(md, "barcodes.tsv"), "w") as fh:
        fh.writelines("BC%d-1\n" % i for i in range(nb))
    do_mtx(o, d, "mex_v2")

    # 6. An unknown filter in X/data's pipeline (optional, so h5py can write it).
    m = counts(rng, 50, 20, 0.3)
    with h5py.File(os.path.join(d, "filter32015.h5ad"), "w") as f:
        write_sparse(f, "X", m, "csr")
        del f["X/data"]
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((64,))
        dcpl.set_filter(32015, h5py.h5z.FLAG_OPTIONAL, (3,))
        space = h5py.h5s.create_simple((m.nnz,), (h5py.h5s.UNLIMITED,))
        dsid = h5py.h5d.create(f["X"].id, b"data", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, m.data.astype(np.float32))
        write_df(f, "obs", ["o%d" % i for i in range(50)], [])
        write_df(f, "var", ["v%d" % i for i in range(20)], [])

    with open(os.path.join(d, "expected.txt"), "w") as fh:
        fh.write("\n".join(o.lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--fixtures":
        fixtures(sys.argv[2])
    else:
        root = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AV_DATA", "/work/shared/data")
        sys.stdout.write("\n".join(shared(root).lines) + "\n")
