#!/usr/bin/env python3
"""Hand-run check of `atlasvi export` against scvi-tools itself (never run by CI).

For several model configurations: trains scVI with atlasvi on the heart file, writes the
latent with `atlasvi latent`, exports the model with `atlasvi export`, opens the
directory with scvi.model.SCVI.load(DIR, adata) and compares
get_latent_representation() with atlasvi's latent. Prints one line per configuration
(recorded in docs/fidelity.md, "Model files both ways").

    python3 tests/golden/check_export_with_scvi.py [build/atlasvi] [heart.h5ad]
"""
import os
import subprocess
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import scvi  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "build", "atlasvi")
DATA = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
    HERE, "..", "..", "..", "shared", "data", "heart_hca_fibro_endo_320x136.h5ad")

CONFIGS = {
    "default, 2 batches": ["--batch-key", "donor_id"],
    "2 layers, encoded batch + categorical + continuous covariates, LayerNorm encoder, "
    "gene-batch NB, latent library": [
        "--batch-key", "donor_id", "--labels-key", "cell_type_ontology_term_id",
        "--categorical-covariate-keys", "tissue_type", "--continuous-covariate-keys", "pct",
        "--n-layers", "2", "--encode-covariates", "true", "--use-layer-norm", "encoder",
        "--dispersion", "gene-batch", "--gene-likelihood", "nb",
        "--use-observed-lib-size", "false"],
    "no batch key, no BatchNorm, LayerNorm both, gene-label Poisson, 3 layers not deeply "
    "injected": [
        "--labels-key", "cell_type_ontology_term_id", "--use-batch-norm", "none",
        "--use-layer-norm", "both", "--dispersion", "gene-label",
        "--gene-likelihood", "poisson", "--n-layers", "3",
        "--deeply-inject-covariates", "false", "--n-hidden", "64", "--n-latent", "8"],
}


def run(*args):
    subprocess.run([BIN, *args], check=True, stdout=subprocess.DEVNULL)


def main():
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        adata = ad.read_h5ad(DATA)
        adata.obs["pct"] = (np.arange(adata.n_obs) % 17) / 17.0  # a continuous covariate
        data = os.path.join(tmp, "data.h5ad")
        adata.write_h5ad(data)
        worst_all = 0.0
        for name, opts in CONFIGS.items():
            model, lat, out = (os.path.join(tmp, f) for f in ("m.h5", "lat.h5ad", "scvi_dir"))
            run("train", data, *opts, "--max-epochs", "30", "--model-out", model,
                "--no-progress", "--output", os.path.join(tmp, "train.h5ad"))
            run("latent", model, data, "--output", lat)
            run("export", model, out, "--overwrite")
            z_av = ad.read_h5ad(lat).obsm["X_scVI"]
            m = scvi.model.SCVI.load(out, adata=ad.read_h5ad(data))
            z_sc = m.get_latent_representation()
            diff = float(np.abs(z_sc - z_av).max())
            worst_all = max(worst_all, diff)
            print(f"{name}: {z_av.shape[0]} cells x {z_av.shape[1]}, "
                  f"max |scvi-tools - atlasvi| = {diff:.3g}", flush=True)
        print(f"scvi-tools {scvi.__version__}, torch {torch.__version__}: worst {worst_all:.3g}"
              f" ({'PASS' if worst_all <= 1e-4 else 'FAIL'} at 1e-4)")
        return 0 if worst_all <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
