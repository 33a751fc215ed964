#!/usr/bin/env python3
"""Makes tests/golden/scvi_model_dir/: a small SCVI model saved by scvi-tools itself
(model.pt) and its latent means for the same cells (latent.txt), for atlasvi import.

Run by hand where scvi-tools is installed (never by CI); the output is committed:

    python3 tests/golden/make_scvi_model_dir.py [/path/to/heart_hca_fibro_endo_320x136.h5ad]

The model deliberately leaves several defaults so that the importer has to read them from
init_params_ and the registry: two hidden layers, encoded covariates (batch + one extra
categorical covariate), LayerNorm in the encoder, gene-batch dispersion, NB likelihood and
a latent library (library_log_means / library_log_vars buffers).
"""
import os
import sys
import warnings

warnings.filterwarnings("ignore")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import scvi  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    HERE, "..", "..", "..", "shared", "data", "heart_hca_fibro_endo_320x136.h5ad")
OUT = os.path.join(HERE, "scvi_model_dir")

scvi.settings.seed = 0
torch.set_num_threads(1)
adata = ad.read_h5ad(DATA)
scvi.model.SCVI.setup_anndata(adata, batch_key="donor_id",
                              labels_key="cell_type_ontology_term_id",
                              categorical_covariate_keys=["tissue_type"])
model = scvi.model.SCVI(adata, n_hidden=32, n_latent=5, n_layers=2, dropout_rate=0.1,
                        dispersion="gene-batch", gene_likelihood="nb",
                        use_observed_lib_size=False, encode_covariates=True,
                        use_layer_norm="encoder")
model.train(max_epochs=20, batch_size=64, accelerator="cpu", enable_progress_bar=False)
model.save(OUT, overwrite=True, save_anndata=False)

# reload as a user would, then the latent means of every cell in file order
model = scvi.model.SCVI.load(OUT, adata=adata)
z = model.get_latent_representation(give_mean=True)
np.savetxt(os.path.join(OUT, "latent.txt"), z, fmt="%.9g",
           header=f"scvi-tools {scvi.__version__} SCVI latent means (give_mean=True), "
                  f"{z.shape[0]} cells x {z.shape[1]} in file order of {os.path.basename(DATA)}")
print(f"wrote {OUT}/model.pt and latent.txt ({z.shape[0]} x {z.shape[1]})")
