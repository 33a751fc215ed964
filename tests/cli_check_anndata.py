#!/usr/bin/python3
"""Reads an .h5ad written by atlasvi with anndata.read_h5ad (warnings are errors) and
checks it (a second opinion beside the C structural check), with the arguments of tests/check_h5ad_structure.c:

usage: cli_check_anndata.py FILE [--cells N] [--genes G] [--obsm KEY K] [--layer NAME]
                            [--row-sum S] [--like INPUT]
       cli_check_anndata.py --list LIST   one check per line, arguments separated by tabs
                                          (one Python start for many files)"""
import sys
import warnings

import anndata
import numpy as np

warnings.simplefilter("error")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}")


def check_file(argv):
    path, args = argv[0], argv[1:]
    opt = {}
    i = 0
    while i < len(args):
        if args[i] == "--obsm":
            opt["obsm"] = (args[i + 1], int(args[i + 2]))
            i += 3
        else:
            opt[args[i][2:]] = args[i + 1]
            i += 2
    a = anndata.read_h5ad(path)
    if "cells" in opt:
        check(a.n_obs == int(opt["cells"]), f"{path}: n_obs {a.n_obs}")
    if "genes" in opt:
        check(a.n_vars == int(opt["genes"]), f"{path}: n_vars {a.n_vars}")
    if "obsm" in opt:
        key, k = opt["obsm"]
        check(key in a.obsm, f"{path}: no obsm[{key}]")
        if key in a.obsm:
            z = np.asarray(a.obsm[key])
            check(z.shape == (a.n_obs, k), f"{path}: obsm[{key}] shape {z.shape}")
            check(z.dtype == np.float32, f"{path}: obsm[{key}] dtype {z.dtype}")
            check(np.isfinite(z).all(), f"{path}: obsm[{key}] not finite")
            check(z.std() > 0, f"{path}: obsm[{key}] constant")
    if "layer" in opt:
        name = opt["layer"]
        check(name in a.layers, f"{path}: no layers[{name}]")
        if name in a.layers:
            x = np.asarray(a.layers[name])
            check(x.shape == a.shape, f"{path}: layers[{name}] shape {x.shape}")
            check(np.isfinite(x).all() and (x >= 0).all(), f"{path}: layers[{name}] not finite or negative")
            if "row-sum" in opt:
                t = float(opt["row-sum"])
                check(np.allclose(x.sum(axis=1), t, rtol=1e-3), f"{path}: layers[{name}] rows do not sum to {t}")
    if "like" in opt:
        b = anndata.read_h5ad(opt["like"], backed="r")
        check(list(a.obs_names) == list(b.obs_names), f"{path}: obs_names differ from the input's")
        check(list(a.var_names) == list(b.var_names), f"{path}: var_names differ from the input's")
        for c in b.obs.columns:
            check(c in a.obs.columns and list(a.obs[c]) == list(b.obs[c]), f"{path}: obs column {c} differs")
        b.file.close()
    print(f"ok   {path}: anndata.read_h5ad {a.shape}")


if sys.argv[1] == "--list":
    specs = [line.rstrip("\n").split("\t") for line in open(sys.argv[2]) if line.strip()]
else:
    specs = [sys.argv[1:]]
for spec in specs:
    try:
        check_file(spec)
    except Exception as e:
        check(False, f"{spec[0]}: {type(e).__name__}: {e}")
sys.exit(1 if failures else 0)
