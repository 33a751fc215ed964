#!/usr/bin/env python3
"""Small seed inputs for the fuzz targets (jobs/fuzz.sh seeds).

usage: make_seeds.py DATA_DIR OUT_DIR [FILES...]

DATA_DIR is ../shared/data (big files: only small subsets are written); FILES are
extra small files made by `atlasvi simulate` / `atlasvi train --model-out`, sorted into
the corpus of their target by suffix (.h5ad -> fuzz_h5ad, model*.h5 -> fuzz_model).
OUT_DIR/<target>/ receives the seeds, plus a truncated and a bit-flipped copy of each
HDF5 seed. Needs h5py (Debian: python3-h5py) for the subsets; without it only the
FILES, the small 10x files and the Matrix Market seeds are written.
"""
import gzip
import os
import random
import shutil
import sys

try:
    import h5py
    import numpy as np
except ImportError:  # only the copies and text seeds
    h5py = None

data, out = sys.argv[1], sys.argv[2]
extra = sys.argv[3:]
rng = random.Random(12)


def target_dir(t):
    d = os.path.join(out, t)
    os.makedirs(d, exist_ok=True)
    return d


def variants(path):
    """a truncated copy and a copy with a few bits flipped past the superblock"""
    b = open(path, "rb").read()
    base = path + ".trunc"
    open(base, "wb").write(b[: max(8, len(b) * 2 // 3)])
    f = bytearray(b)
    for _ in range(4):
        i = rng.randrange(96, len(f)) if len(f) > 96 else rng.randrange(len(f))
        f[i] ^= 1 << rng.randrange(8)
    open(path + ".flip", "wb").write(bytes(f))


def copy_small(src, t, name, limit=150_000):
    if os.path.exists(src) and os.path.getsize(src) <= limit:
        dst = os.path.join(target_dir(t), name)
        shutil.copyfile(src, dst)
        variants(dst)


def copy_tree(src, dst, n_rows=None, n_cols=None):
    """h5py copy of src (group) into dst (group), slicing datasets' first axis"""
    for k, v in src.attrs.items():
        dst.attrs[k] = v
    for name, obj in src.items():
        if isinstance(obj, h5py.Group):
            copy_tree(obj, dst.create_group(name), n_rows, n_cols)
        else:
            dst.create_dataset(name, data=obj[()], compression=obj.compression)
            for k, v in obj.attrs.items():
                dst[name].attrs[k] = v


def h5ad_subsets():
    import anndata as ad

    for src, n in (("heart_hca_fibro_endo_320x136.h5ad", 12), ("pbmc_multiome_labeled_rna_100x200.h5ad", 10),
                   ("pbmc10k_cite_200x16727.h5ad", 8), ("real_pbmc_kang18_ctrlstim_1556x1267.h5ad", 10)):
        p = os.path.join(data, src)
        if not os.path.exists(p):
            continue
        a = ad.read_h5ad(p, backed="r")
        sub = a[:n, : min(24, a.n_vars)].to_memory()
        sub.uns = {}  # keep the seeds small: what the readers look at only
        for k in list(sub.obsm) + list(sub.obsp):
            sub.obsm.pop(k, None), sub.obsp.pop(k, None)
        for k in list(sub.varm):
            del sub.varm[k]
        stem = src.split("_")[0] + "_" + src.split("_")[1]
        d = target_dir("fuzz_h5ad")
        o = os.path.join(d, stem + ".h5ad")
        sub.write_h5ad(o)
        variants(o)
        # dense X with a counts layer, gzip; CSC X
        import scipy.sparse as sp

        dense = sub.copy()
        X = dense.X.toarray() if sp.issparse(dense.X) else np.asarray(dense.X)
        dense.X = X
        dense.layers["counts"] = sp.csr_matrix(X)
        dense.raw = dense
        o = os.path.join(d, stem + "_dense_layer_raw.h5ad")
        dense.write_h5ad(o, compression="gzip")
        variants(o)
        csc = sub.copy()
        csc.X = sp.csc_matrix(X)
        o = os.path.join(d, stem + "_csc.h5ad")
        csc.write_h5ad(o)
        variants(o)


def tenx_subsets():
    d = target_dir("fuzz_10x")
    for src, stem in (("pbmc_gse164378_rna50_adt30_200cells_10x.h5", "pbmc_cite"),
                      ("tenx_v3_chr21/filtered_feature_bc_matrix.h5", "chr21"),
                      ("visium_human_subset/filtered_feature_bc_matrix.h5", "visium")):
        p = os.path.join(data, src)
        if not os.path.exists(p):
            continue
        with h5py.File(p, "r") as f:
            m = f["matrix"]
            n_cells = 6
            indptr = m["indptr"][: n_cells + 1]
            nnz = int(indptr[-1])
            o = os.path.join(d, stem + "_6cells.h5")
            with h5py.File(o, "w") as g:
                for k, v in f.attrs.items():
                    g.attrs[k] = v
                gm = g.create_group("matrix")
                gm.create_dataset("barcodes", data=m["barcodes"][:n_cells])
                gm.create_dataset("data", data=m["data"][:nnz], compression="gzip")
                gm.create_dataset("indices", data=m["indices"][:nnz], compression="gzip")
                gm.create_dataset("indptr", data=indptr)
                gm.create_dataset("shape", data=m["shape"][()])
                copy_tree(m["features"], gm.create_group("features"))
            variants(o)
            if stem == "chr21":  # the same cells as a 10x v2 file (genome group, genes)
                o = os.path.join(d, stem + "_v2.h5")
                with h5py.File(o, "w") as g:
                    gg = g.create_group("GRCh38")
                    gg.create_dataset("barcodes", data=m["barcodes"][:n_cells])
                    gg.create_dataset("data", data=m["data"][:nnz])
                    gg.create_dataset("indices", data=m["indices"][:nnz])
                    gg.create_dataset("indptr", data=indptr)
                    gg.create_dataset("shape", data=m["shape"][()])
                    gg.create_dataset("genes", data=m["features/id"][()])
                    gg.create_dataset("gene_names", data=m["features/name"][()])
                variants(o)


def loom_subsets():
    p = os.path.join(data, "starmap_mpfc_3704x158.loom")
    if not os.path.exists(p):
        return
    d = target_dir("fuzz_loom")
    with h5py.File(p, "r") as f:
        n_genes, n_cells = 20, 10
        for variant in ("plain", "layer"):
            o = os.path.join(d, "starmap_%s.loom" % variant)
            with h5py.File(o, "w") as g:
                for k, v in f.attrs.items():
                    g.attrs[k] = v
                g.create_dataset("matrix", data=f["matrix"][:n_genes, :n_cells], chunks=True,
                                 compression="gzip")
                for grp, n in (("row_attrs", n_genes), ("col_attrs", n_cells)):
                    gg = g.create_group(grp)
                    for k, v in f[grp].items():
                        if isinstance(v, h5py.Dataset) and v.shape and v.shape[0] >= n:
                            gg.create_dataset(k, data=v[:n])
                lg = g.create_group("layers")
                if variant == "layer":
                    lg.create_dataset("spliced", data=f["matrix"][:n_genes, :n_cells].astype("int32"))
                for grp in ("row_graphs", "col_graphs"):
                    g.create_group(grp)
            variants(o)


def mtx_seeds():
    d = target_dir("fuzz_mtx")
    src = os.path.join(data, "tenx_v3_chr21", "filtered_feature_bc_matrix")
    if os.path.isdir(src):
        bar = gzip.open(os.path.join(src, "barcodes.tsv.gz"), "rt").read().splitlines()[:5]
        feat = gzip.open(os.path.join(src, "features.tsv.gz"), "rt").read().splitlines()
        lines = gzip.open(os.path.join(src, "matrix.mtx.gz"), "rt").read().splitlines()
        header = [x for x in lines if x.startswith("%")]
        body = [x for x in lines if not x.startswith("%")][1:]
        keep = [x for x in body if int(x.split()[1]) <= 5][:40]
        genes = sorted({int(x.split()[0]) for x in keep})
        remap = {g: i + 1 for i, g in enumerate(genes)}
        ents = ["%d %s %s" % (remap[int(x.split()[0])], x.split()[1], x.split()[2]) for x in keep]
        mtx = header + ["%d %d %d" % (len(genes), 5, len(ents))] + ents
        fts = [feat[g - 1] for g in genes]
        seed = "\n".join(mtx) + "\n~~~\n" + "\n".join(bar) + "\n~~~\n" + "\n".join(fts) + "\n"
        open(os.path.join(d, "chr21_5cells.txt"), "w").write(seed)
        open(os.path.join(d, "chr21_5cells_gz.txt"), "w").write("GZ\n" + seed)
    small = [
        "%%MatrixMarket matrix coordinate integer general\n3 2 4\n1 1 5\n2 1 1\n3 2 7\n1 2 2\n"
        "~~~\nAAAC-1\nAAAG-1\n~~~\nG1\tgene1\tGene Expression\nG2\tgene2\tGene Expression\n"
        "G3\tCD3\tAntibody Capture\n",
        "%%MatrixMarket matrix coordinate real general\n% comment\n2 3 3\n1 1 1.5\n2 2 2\n1 3 4\n"
        "~~~\nc1\nc2\nc3\n~~~\ng1\ng2\n",
        "%%MatrixMarket matrix coordinate integer general\n2 2 1\n1 1 3\n~~~\nc1\nc2\n~~~\n~~~\n"
        "g1\tA\ng2\tB\n",
        "%%MatrixMarket matrix coordinate pattern general\n2 2 2\n1 1\n2 2\n~~~\nc1\nc2\n~~~\n"
        "g1\tA\tGene Expression\ng2\tB\tGene Expression\n",
    ]
    for i, s in enumerate(small):
        open(os.path.join(d, "small_%d.txt" % i), "w").write(s)


for f in extra:
    base = os.path.basename(f)
    t = "fuzz_model" if base.startswith("model") else "fuzz_h5ad"
    copy_small(f, t, base)
copy_small(os.path.join(data, "pbmc_gse164378_rna50_adt30_200cells_10x.h5"), "fuzz_10x", "pbmc_cite_200cells.h5")
copy_small(os.path.join(data, "visium_human_subset/filtered_feature_bc_matrix.h5"), "fuzz_10x", "visium.h5")
mtx_seeds()
if h5py is not None:
    for fn in (h5ad_subsets, tenx_subsets, loom_subsets):
        try:
            fn()
        except Exception as e:  # a missing or unexpected file: fewer seeds, not a failure
            print("make_seeds: %s: %s" % (fn.__name__, e), file=sys.stderr)
for t in sorted(os.listdir(out)):
    print("make_seeds: %-11s %3d seeds" % (t, len(os.listdir(os.path.join(out, t)))))
