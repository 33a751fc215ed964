#!/usr/bin/env python3
"""Generate the scVI golden fixtures for atlasvi's C tests.

Run by hand (never by CI, which has no PyTorch):

    python3 tests/golden/make_goldens.py            # all cases
    python3 tests/golden/make_goldens.py default    # selected cases

Writes tests/golden/scvi_<case>.h5. The layout is documented in tests/golden/README.md.

Every case builds ``scvi.module.VAE`` (the module ``scvi.model.SCVI`` wraps) directly, gives
it non-trivial weights with a short unexported pre-training, then records one training-mode
forward/backward pass of the *real scvi-tools code* with exported standard-normal noise
(``torch.distributions.normal._standard_normal`` is patched to hand out our noise), the
eval-mode encoder outputs and, for some cases, a 10-step Adam trajectory.

Self-consistency: an independent float64 re-implementation written from model-spec.md
(sections 2, 3, 5) is run on the exported tensors only (params, inputs, noise); its
outputs, loss, gradients, BatchNorm running statistics and Adam trajectory must agree with
what scvi-tools produced, or the script aborts before writing anything.
"""

from __future__ import annotations

import copy
import os
import sys
from contextlib import contextmanager

import anndata as ad
import h5py
import numpy as np
import torch
import torch.distributions.normal as tdn
import torch.nn.functional as F

import scvi
from scvi.module import VAE

torch.set_num_threads(2)
torch.set_default_dtype(torch.float32)

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get("AV_DATA", os.path.join(HERE, "..", "..", "..", "shared", "data"))
DATA = os.path.abspath(DATA) if os.path.isdir(DATA) else "/work/shared/data"

KL_WEIGHT = 0.5
ADAM_STEPS = 10
ADAM_LR, ADAM_EPS, ADAM_WD = 1e-3, 0.01, 1e-6
PRETRAIN_STEPS, PRETRAIN_LR = 25, 5e-3
FORMAT_VERSION = 1

# --------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------
# data: "heart" (batch = assay, 2 levels; labels = cell type, 2 levels)
#       "kang"  (batch = sample_id, labels = cluster_id; cat covs group_id (2) and
#                cluster_id restricted to 3 clusters; cont covs from the cell's counts)
BASE = dict(
    n_hidden=32, n_latent=8, n_layers=1, dropout_rate=0.0, dispersion="gene",
    gene_likelihood="zinb", latent_distribution="normal", use_observed_lib_size=True,
    encode_covariates=False, deeply_inject_covariates=True, use_batch_norm="both",
    use_layer_norm="none", log_variational=True, n_continuous_cov=0, n_cats_per_cov=[],
)

CASES = {
    # scvi.model.SCVI defaults (zinb, gene, batch, observed library, normal, 1 layer, BN
    # both, H=128, L=10, dropout 0.1 -> dropout masks exported)
    "default": dict(data="heart", N=48, G=80, n_batch=2, n_labels=2, seed=1,
                    n_hidden=128, n_latent=10, dropout_rate=0.1),
    "nb_nobatch": dict(data="heart", N=40, G=64, n_batch=1, n_labels=2, seed=2,
                       gene_likelihood="nb", adam=True),
    "poisson_b3": dict(data="kang", N=48, G=72, n_batch=3, n_labels=4, seed=3,
                       gene_likelihood="poisson"),
    "zinb_genebatch_b3": dict(data="kang", N=48, G=72, n_batch=3, n_labels=4, seed=4,
                              dispersion="gene-batch"),
    "nb_genelabel": dict(data="kang", N=48, G=64, n_batch=2, n_labels=4, seed=5,
                         gene_likelihood="nb", dispersion="gene-label"),
    "zinb_genecell": dict(data="heart", N=40, G=64, n_batch=2, n_labels=2, seed=6,
                          dispersion="gene-cell"),
    "learned_lib": dict(data="heart", N=48, G=72, n_batch=2, n_labels=2, seed=7,
                        use_observed_lib_size=False, adam=True),
    "ln_learned_lib_b1_enc": dict(data="heart", N=40, G=64, n_batch=1, n_labels=2, seed=8,
                                  gene_likelihood="nb", latent_distribution="ln",
                                  use_observed_lib_size=False, encode_covariates=True),
    "covs_decoder_2layer": dict(data="kang", N=48, G=64, n_batch=2, n_labels=3, seed=9,
                                n_cats_per_cov=[2, 3], n_continuous_cov=2, n_layers=2),
    "covs_encode_learned_2layer": dict(data="kang", N=48, G=64, n_batch=3, n_labels=3,
                                       seed=10, n_cats_per_cov=[2, 3], n_continuous_cov=2,
                                       n_layers=2, encode_covariates=True,
                                       use_observed_lib_size=False, gene_likelihood="nb",
                                       dispersion="gene-batch", adam=True),
    "noinject_2layer_bndec_lnenc": dict(data="kang", N=40, G=56, n_batch=3, n_labels=3, seed=11,
                                n_cats_per_cov=[3, 1], n_continuous_cov=1, n_layers=2,
                                encode_covariates=True, deeply_inject_covariates=False,
                                use_batch_norm="decoder", use_layer_norm="encoder"),
    "nobn_layernorm_2layer": dict(data="heart", N=40, G=64, n_batch=2, n_labels=2, seed=12,
                                  use_batch_norm="none", use_layer_norm="both", n_layers=2,
                                  adam=True),
    "bnenc_lndec_nb": dict(data="heart", N=40, G=64, n_batch=2, n_labels=2, seed=13,
                           gene_likelihood="nb", use_batch_norm="encoder",
                           use_layer_norm="decoder"),
    "poisson_nolog_learned": dict(data="kang", N=40, G=56, n_batch=2, n_labels=3, seed=14,
                                  gene_likelihood="poisson", log_variational=False,
                                  use_observed_lib_size=False),
}


def case_config(name):
    cfg = dict(BASE)
    cfg.update(CASES[name])
    cfg.setdefault("adam", False)
    return cfg


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
_DATA_CACHE = {}


def _load(which):
    if which not in _DATA_CACHE:
        fname = {"heart": "heart_hca_fibro_endo_320x136.h5ad",
                 "kang": "real_pbmc_kang18_ctrlstim_1556x1267.h5ad"}[which]
        a = ad.read_h5ad(os.path.join(DATA, fname))
        X = a.X.toarray().astype(np.float32) if hasattr(a.X, "toarray") else np.asarray(a.X, np.float32)
        _DATA_CACHE[which] = (X, a.obs.copy(), fname)
    return _DATA_CACHE[which]


def _codes(values):
    """Codes = positions in the sorted unique values of the subset (setup_anndata on a plain
    column with only the subset's categories)."""
    cats = sorted(set(values))
    lut = {c: i for i, c in enumerate(cats)}
    return np.array([lut[v] for v in values], np.int32), cats


def make_inputs(cfg):
    X, obs, fname = _load(cfg["data"])
    rng = np.random.default_rng(1000 + cfg["seed"])
    N, G, B, K = cfg["N"], cfg["G"], cfg["n_batch"], cfg["n_labels"]
    ncc = cfg["n_cats_per_cov"]
    if cfg["data"] == "heart":
        bcol = obs["assay_ontology_term_id"].astype(str).values
        lcol = obs["cell_type_ontology_term_id"].astype(str).values
        pool = np.arange(X.shape[0])
        assert B in (1, 2) and K == 2 and not ncc
    else:
        bcol = obs["sample_id"].astype(str).values
        lcol = obs["cluster_id"].astype(str).values
        gcol = obs["group_id"].astype(str).values
        samples = sorted(set(bcol))
        keep_s = [s for s in samples][: max(B, 2)] if B > 1 else samples[:1]
        if B == 2:
            keep_s = ["ctrl101", "stim101"]
        elif B == 3:
            keep_s = ["ctrl101", "ctrl107", "stim101"]
        clusters = sorted(set(lcol))[:K]
        pool = np.where(np.isin(bcol, keep_s) & np.isin(lcol, clusters))[0]
    # stratified draw over (batch, label) so every category is represented
    key = np.array([f"{bcol[i]}|{lcol[i]}" for i in pool])
    groups = sorted(set(key))
    per = int(np.ceil(N / len(groups)))
    chosen = []
    for gname in groups:
        idx = pool[key == gname]
        chosen.extend(rng.choice(idx, size=min(per, len(idx)), replace=False).tolist())
    chosen = rng.permutation(np.array(chosen))[:N]
    chosen = np.sort(chosen)
    # the G most expressed genes in the chosen cells, kept in file order
    Xs = X[chosen]
    top = np.sort(np.argsort(-Xs.sum(0), kind="stable")[:G])
    x = Xs[:, top].astype(np.float32)
    lib = x.sum(1)
    assert (lib > 0).all(), "a cell has zero total counts on the selected genes"
    assert np.all(x == np.round(x)) and (x >= 0).all()

    batch = _codes(bcol[chosen])[0] if B > 1 else np.zeros(N, np.int32)
    labels = _codes(lcol[chosen])[0]
    assert batch.max() + 1 == B and labels.max() + 1 == K, (batch.max(), labels.max())
    inp = dict(x=x, batch=batch, labels=labels, cells=chosen.astype(np.int32),
               genes=top.astype(np.int32), source=fname)
    if ncc:
        cols = []
        for k, n in enumerate(ncc):
            if n == 1:
                c = np.zeros(N, np.int32)  # a constant covariate (one category)
            elif n == 2:
                c = _codes(gcol[chosen])[0]
            elif n == 3:
                c = _codes(lcol[chosen])[0] % 3 if K != 3 else labels.copy()
            else:
                raise ValueError(n)
            assert c.max() + 1 == n
            cols.append(c)
        inp["cat_covs"] = np.stack(cols, 1).astype(np.int32)
    if cfg["n_continuous_cov"]:
        full = X[chosen]
        cont = [np.log10(full.sum(1) + 1.0), (full > 0).mean(1)]  # log10 total, detect rate
        inp["cont_covs"] = np.stack(cont[: cfg["n_continuous_cov"]], 1).astype(np.float32)
    if not cfg["use_observed_lib_size"]:
        # scvi.model._utils._init_library_size on the registered data (here: the subset)
        means = np.zeros(B)
        vars_ = np.ones(B)
        for b in np.unique(batch):
            s = x[batch == b].sum(1)
            lc = np.ma.log(s).filled(0)
            means[b] = np.mean(lc).astype(np.float32)
            vars_[b] = np.var(lc).astype(np.float32)
        inp["library_log_means"] = means.reshape(1, -1)
        inp["library_log_vars"] = vars_.reshape(1, -1)
    return inp


def tensors_of(inp):
    t = {
        "X": torch.from_numpy(inp["x"]),
        "batch": torch.from_numpy(inp["batch"].astype(np.int64)).unsqueeze(1),
        "labels": torch.from_numpy(inp["labels"].astype(np.int64)).unsqueeze(1),
    }
    if "cat_covs" in inp:
        t["extra_categorical_covs"] = torch.from_numpy(inp["cat_covs"].astype(np.int64))
    if "cont_covs" in inp:
        t["extra_continuous_covs"] = torch.from_numpy(inp["cont_covs"])
    return t


def build_module(cfg, inp):
    kw = dict(
        n_input=cfg["G"], n_batch=cfg["n_batch"], n_labels=cfg["n_labels"],
        n_hidden=cfg["n_hidden"], n_latent=cfg["n_latent"], n_layers=cfg["n_layers"],
        n_continuous_cov=cfg["n_continuous_cov"],
        n_cats_per_cov=list(cfg["n_cats_per_cov"]) or None,
        dropout_rate=cfg["dropout_rate"], dispersion=cfg["dispersion"],
        log_variational=cfg["log_variational"], gene_likelihood=cfg["gene_likelihood"],
        latent_distribution=cfg["latent_distribution"],
        encode_covariates=cfg["encode_covariates"],
        deeply_inject_covariates=cfg["deeply_inject_covariates"],
        use_batch_norm=cfg["use_batch_norm"], use_layer_norm=cfg["use_layer_norm"],
        use_observed_lib_size=cfg["use_observed_lib_size"],
    )
    if not cfg["use_observed_lib_size"]:
        kw["library_log_means"] = inp["library_log_means"]
        kw["library_log_vars"] = inp["library_log_vars"]
    return VAE(**kw)


# --------------------------------------------------------------------------------------
# noise control
# --------------------------------------------------------------------------------------
@contextmanager
def fixed_noise(queue):
    """Normal.rsample draws eps from torch.distributions.normal._standard_normal; hand out
    the tensors of `queue` in order instead (z encoder first, then library encoder)."""
    orig = tdn._standard_normal
    q = list(queue)

    def fake(shape, dtype, device):
        assert q, "more rsample calls than exported noise tensors"
        e = q.pop(0)
        assert tuple(e.shape) == tuple(shape), (e.shape, shape)
        return e.to(dtype=dtype, device=device)

    tdn._standard_normal = fake
    try:
        yield
    finally:
        tdn._standard_normal = orig
    assert not q, "exported noise not consumed"


@contextmanager
def fixed_dropout(module, masks):
    """Replace every nn.Dropout's random mask by the given one (inverted dropout, as torch)."""
    patched = []
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Dropout) and name in masks:
            p = m.p
            mk = masks[name]

            def fwd(x, mk=mk, p=p):
                return x * (mk.to(x.dtype) / (1.0 - p))

            m.forward = fwd
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def dropout_modules(module, cfg):
    """Dropout modules that run in a forward pass (the library encoder only runs when the
    library is latent)."""
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Dropout):
            if name.startswith("l_encoder") and cfg["use_observed_lib_size"]:
                continue
            out[name] = m
    return out


def noise_shapes(cfg):
    shapes = [(cfg["N"], cfg["n_latent"])]
    if not cfg["use_observed_lib_size"]:
        shapes.append((cfg["N"], 1))
    return shapes


# --------------------------------------------------------------------------------------
# independent float64 reference (model-spec.md sections 2, 3, 5)
# --------------------------------------------------------------------------------------
def _onehots(codes_list, ncat_list):
    out = []
    for c, n in zip(codes_list, ncat_list):
        if n > 1:
            out.append(F.one_hot(c.long(), n).double())
    return out


def ref_fclayers(P, prefix, h, covs, n_layers, inject, bn, ln, train, masks, p_drop, newrun):
    for i in range(n_layers):
        lp = f"{prefix}.fc_layers.Layer {i}"
        if i == 0 or inject:
            h = torch.cat([h] + covs, 1)
        h = h @ P[lp + ".0.weight"].T + P[lp + ".0.bias"]
        if bn:
            rm, rv = P[lp + ".1.running_mean"], P[lp + ".1.running_var"]
            if train:
                m = h.mean(0)
                v = h.var(0, unbiased=False)
                hn = (h - m) / torch.sqrt(v + 1e-3)
                n = h.shape[0]
                newrun[lp + ".1.running_mean"] = 0.99 * rm + 0.01 * m.detach()
                newrun[lp + ".1.running_var"] = 0.99 * rv + 0.01 * v.detach() * n / (n - 1)
            else:
                hn = (h - rm) / torch.sqrt(rv + 1e-3)
            h = hn * P[lp + ".1.weight"] + P[lp + ".1.bias"]
        if ln:
            m = h.mean(1, keepdim=True)
            v = h.var(1, unbiased=False, keepdim=True)
            h = (h - m) / torch.sqrt(v + 1e-5)
        h = torch.relu(h)
        key = lp + ".4"
        if train and masks is not None and key in masks:
            h = h * masks[key].double() / (1.0 - p_drop)
    return h


def ref_log_nb(x, mu, theta, eps=1e-8):
    ltm = torch.log(theta + mu + eps)
    return (theta * (torch.log(theta + eps) - ltm) + x * (torch.log(mu + eps) - ltm)
            + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1))


def ref_log_zinb(x, mu, theta, pi, eps=1e-8):
    sp = F.softplus(-pi)
    a = -pi + theta * (torch.log(theta + eps) - torch.log(theta + mu + eps))
    case_zero = F.softplus(a) - sp
    case_pos = (-sp + a + x * (torch.log(mu + eps) - torch.log(theta + mu + eps))
                + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1))
    return (x < eps).double() * case_zero + (x > eps).double() * case_pos


def ref_log_poisson(x, lam):
    return torch.xlogy(x, lam) - lam - torch.lgamma(x + 1)


def ref_forward(cfg, P, inp, eps_z, eps_l=None, masks=None, train=True, kl_weight=KL_WEIGHT):
    """Returns dict of outputs; newrun holds the updated BN running stats (train mode)."""
    x = torch.from_numpy(inp["x"]).double()
    N = x.shape[0]
    B, K = cfg["n_batch"], cfg["n_labels"]
    batch = torch.from_numpy(inp["batch"]).long()
    labels = torch.from_numpy(inp["labels"]).long()
    ncc = list(cfg["n_cats_per_cov"])
    catc = [torch.from_numpy(inp["cat_covs"][:, k]).long() for k in range(len(ncc))]
    cont = torch.from_numpy(inp["cont_covs"]).double() if "cont_covs" in inp else None
    cat_onehots = _onehots([batch] + catc, [B] + ncc)
    ub, ul = cfg["use_batch_norm"], cfg["use_layer_norm"]
    bn_enc, bn_dec = ub in ("encoder", "both"), ub in ("decoder", "both")
    ln_enc, ln_dec = ul in ("encoder", "both"), ul in ("decoder", "both")
    newrun = {}
    o = {}

    xin = torch.log1p(x) if cfg["log_variational"] else x
    if cfg["encode_covariates"]:
        if cont is not None:
            xin = torch.cat([xin, cont], 1)
        enc_covs = cat_onehots
    else:
        enc_covs = []

    def encoder(pref, n_layers):
        q = ref_fclayers(P, pref + ".encoder", xin, enc_covs, n_layers,
                         cfg["deeply_inject_covariates"], bn_enc, ln_enc, train, masks,
                         cfg["dropout_rate"], newrun)
        m = q @ P[pref + ".mean_encoder.weight"].T + P[pref + ".mean_encoder.bias"]
        v = torch.exp(q @ P[pref + ".var_encoder.weight"].T + P[pref + ".var_encoder.bias"]) + 1e-4
        return m, v

    qz_m, qz_v = encoder("z_encoder", cfg["n_layers"])
    o["qz_m"], o["qz_v"] = qz_m, qz_v
    if cfg["use_observed_lib_size"]:
        library = torch.log(x.sum(1, keepdim=True))
    else:
        ql_m, ql_v = encoder("l_encoder", 1)
        o["ql_m"], o["ql_v"] = ql_m, ql_v
        library = ql_m if eps_l is None else ql_m + torch.sqrt(ql_v) * eps_l
    zt = qz_m if eps_z is None else qz_m + torch.sqrt(qz_v) * eps_z
    z = torch.softmax(zt, 1) if cfg["latent_distribution"] == "ln" else zt
    o["z"], o["library"] = z, library

    dec_in = z if cont is None else torch.cat([z, cont], 1)
    h = ref_fclayers(P, "decoder.px_decoder", dec_in, cat_onehots, cfg["n_layers"],
                     cfg["deeply_inject_covariates"], bn_dec, ln_dec, train, None, 0.0, newrun)
    px_scale = torch.softmax(h @ P["decoder.px_scale_decoder.0.weight"].T
                             + P["decoder.px_scale_decoder.0.bias"], 1)
    px_dropout = h @ P["decoder.px_dropout_decoder.weight"].T + P["decoder.px_dropout_decoder.bias"]
    px_rate = torch.exp(library) * px_scale
    d = cfg["dispersion"]
    if d == "gene":
        px_r = torch.exp(P["px_r"]).expand(N, -1)
    elif d == "gene-batch":
        px_r = torch.exp(P["px_r"].T[batch])
    elif d == "gene-label":
        px_r = torch.exp(P["px_r"].T[labels])
    else:
        px_r = torch.exp(h @ P["decoder.px_r_decoder.weight"].T + P["decoder.px_r_decoder.bias"])
    o.update(px_scale=px_scale, px_rate=px_rate, px_r=px_r, px_dropout=px_dropout)

    lik = cfg["gene_likelihood"]
    if lik == "zinb":
        ll = ref_log_zinb(x, px_rate, px_r, px_dropout)
    elif lik == "nb":
        ll = ref_log_nb(x, px_rate, px_r)
    else:
        ll = ref_log_poisson(x, px_rate)
    rec = -ll.sum(1)
    kl_z = 0.5 * (qz_v + qz_m ** 2 - 1.0 - torch.log(qz_v)).sum(1)
    if cfg["use_observed_lib_size"]:
        kl_l = torch.zeros_like(kl_z)
    else:
        pm = torch.from_numpy(inp["library_log_means"][0]).float().double()[batch]
        pv = torch.from_numpy(inp["library_log_vars"][0]).float().double()[batch]
        s1, s2 = torch.sqrt(ql_v[:, 0]), torch.sqrt(pv)
        kl_l = torch.log(s2 / s1) + (s1 ** 2 + (ql_m[:, 0] - pm) ** 2) / (2 * s2 ** 2) - 0.5
    o.update(rec_loss=rec, kl_z=kl_z, kl_l=kl_l,
             loss=torch.mean(rec + kl_weight * kl_z + kl_l))
    o["newrun"] = newrun
    return o


# --------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------
def close(name, ref, got, rtol=2e-4, atol_rel=2e-5, atol=1e-6):
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    assert ref.shape == got.shape, (name, ref.shape, got.shape)
    scale = max(np.abs(ref).max(initial=0.0), 1e-30)
    err = np.abs(ref - got)
    ok = err <= rtol * np.abs(ref) + atol_rel * scale + atol
    if not ok.all():
        i = np.unravel_index(np.argmax(err - rtol * np.abs(ref)), err.shape)
        raise AssertionError(f"{name}: mismatch at {i}: ref {ref[i]!r} got {got[i]!r} "
                             f"(max abs err {err.max():.3g}, scale {scale:.3g})")
    return float(err.max())


def is_prebn_bias(cfg, name):
    """Bias of a Linear that is followed by a train-mode BatchNorm."""
    if not (".fc_layers.Layer " in name and name.endswith(".0.bias")):
        return False
    ub = cfg["use_batch_norm"]
    if name.startswith("decoder."):
        return ub in ("decoder", "both")
    return ub in ("encoder", "both")


# --------------------------------------------------------------------------------------
# one case
# --------------------------------------------------------------------------------------
def run_case(name):
    cfg = case_config(name)
    inp = make_inputs(cfg)
    N, L, G = cfg["N"], cfg["n_latent"], cfg["G"]
    torch.manual_seed(cfg["seed"])
    module = build_module(cfg, inp)
    t = tensors_of(inp)

    # --- short pre-training (random noise, not exported) so weights, px_r and the BN
    # running statistics are not at their initial values
    module.train()
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad],
                           lr=PRETRAIN_LR, eps=ADAM_EPS, weight_decay=ADAM_WD)
    for _ in range(PRETRAIN_STEPS):
        opt.zero_grad()
        _, _, lo = module.forward(t, loss_kwargs={"kl_weight": KL_WEIGHT})
        lo.loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)

    state0 = {k: v.detach().clone() for k, v in module.state_dict().items()}
    param_names = [n for n, _ in module.named_parameters()]
    P64 = {k: v.double() for k, v in state0.items() if "num_batches_tracked" not in k}

    # hooks capturing the encoders' variance pre-activation (to export v exactly as scvi
    # computes it, rather than qz.scale**2)
    cap = {}

    def hook(key):
        def f(mod, i, out):
            cap[key] = out.detach()
        return f

    hooks = [module.z_encoder.var_encoder.register_forward_hook(hook("z")),
             module.l_encoder.var_encoder.register_forward_hook(hook("l"))]

    res = {"eval": {}, "out": {}, "noise": {}, "grads": {}, "after": {}, "adam": {}}

    # --- eval mode (running BN statistics, no dropout) from the exported params
    module.eval()
    with torch.no_grad():
        inf = module.inference(**module._get_inference_input(t))
        qz = inf["qz"]
        res["eval"]["qz_m"] = qz.loc
        res["eval"]["qz_v"] = torch.exp(cap["z"]) + module.z_encoder.var_eps
        lib = inf["library"]
        if not cfg["use_observed_lib_size"]:
            ql = inf["ql"]
            res["eval"]["ql_m"] = ql.loc
            res["eval"]["ql_v"] = torch.exp(cap["l"]) + module.l_encoder.var_eps
            lib = ql.loc
        zt = module.z_encoder.z_transformation(qz.loc)
        gin = module._get_generative_input(t, {"z": zt, "library": lib})
        gen = module.generative(**gin)
        px = gen["px"]
        res["eval"]["px_scale_at_mean"] = px.scale
        res["eval"]["px_rate_at_mean"] = px.mu if hasattr(px, "mu") else px.rate
    for k in ("qz_m", "qz_v"):
        assert torch.equal(res["eval"][k], res["eval"][k])

    # --- train-mode forward/backward with exported noise
    module.train()
    g = torch.Generator().manual_seed(50_000 + cfg["seed"])
    noise = [torch.randn(s, generator=g) for s in noise_shapes(cfg)]
    res["noise"]["z"] = noise[0]
    if len(noise) > 1:
        res["noise"]["library"] = noise[1]
    masks = {}
    for mname, m in dropout_modules(module, cfg).items():
        width = cfg["n_hidden"]
        masks[mname] = (torch.rand((N, width), generator=g) >= m.p).to(torch.uint8)
    with fixed_noise(noise), fixed_dropout(module, masks):
        inf, gen, lo = module.forward(t, loss_kwargs={"kl_weight": KL_WEIGHT})
    lo.loss.backward()
    px = gen["px"]
    out = res["out"]
    out["qz_m"], out["qz_v"] = inf["qz"].loc, torch.exp(cap["z"]) + module.z_encoder.var_eps
    out["z"], out["library"] = inf["z"], inf["library"]
    if not cfg["use_observed_lib_size"]:
        out["ql_m"] = inf["ql"].loc
        out["ql_v"] = torch.exp(cap["l"]) + module.l_encoder.var_eps
    out["px_scale"] = px.scale
    lik = cfg["gene_likelihood"]
    if lik == "poisson":
        out["px_rate"] = px.rate
    else:
        out["px_rate"] = px.mu
        th = px.theta
        out["px_r"] = th.expand(N, G) if th.dim() == 1 or th.shape[0] == 1 else th
    if lik == "zinb":
        out["px_dropout"] = px.zi_logits
    out["rec_loss"] = lo.reconstruction_loss["reconstruction_loss"]
    out["kl_z"] = lo.kl_local["kl_divergence_z"]
    out["kl_l"] = lo.kl_local["kl_divergence_l"]
    out["loss"] = lo.loss
    grads_none = []
    for n, p in module.named_parameters():
        if p.grad is None:
            grads_none.append(n)
        else:
            res["grads"][n] = p.grad.detach().clone()
    for k, v in module.state_dict().items():
        if "running_" in k:
            res["after"][k] = v.detach().clone()
    for h in hooks:
        h.remove()
    res["masks"] = masks

    # --- reference check of the train-mode pass (values, BN stats, gradients)
    P = {k: v.clone().requires_grad_(k in param_names) for k, v in P64.items()}
    masks_ref = masks if masks else None
    r = ref_forward(cfg, P, inp, noise[0].double(),
                    noise[1].double() if len(noise) > 1 else None, masks_ref, train=True)
    r["loss"].backward()
    errs = {}
    for k in ("qz_m", "qz_v", "z", "library", "ql_m", "ql_v", "px_scale", "px_rate", "px_r",
              "px_dropout", "rec_loss", "kl_z", "kl_l", "loss"):
        if k in out:
            errs[k] = close(f"{name}/out/{k}", r[k].detach(), out[k].detach())
    for k, v in res["after"].items():
        if k in r["newrun"]:
            close(f"{name}/after/{k}", r["newrun"][k], v)
        else:  # module not run in this pass (library encoder with observed library)
            assert torch.equal(v, state0[k]), k
    for n in param_names:
        gref = P[n].grad
        if n in grads_none:
            assert gref is None or float(gref.abs().max()) == 0.0, n
        else:
            if is_prebn_bias(cfg, n):
                # analytically zero (BatchNorm removes a constant shift); scvi's float32
                # value is rounding noise
                wmax = float(res["grads"][n[: -len("bias")] + "weight"].abs().max())
                assert float(res["grads"][n].abs().max()) <= 1e-3 * wmax + 1e-6, n
                assert float(gref.abs().max()) <= 1e-9 * (1 + wmax), n
            else:
                close(f"{name}/grads/{n}", gref, res["grads"][n], rtol=2e-3, atol_rel=2e-4,
                      atol=1e-6)
    # plain-formula loss from the exported *outputs* (float64 numpy-level formulas)
    x64 = torch.from_numpy(inp["x"]).double()
    if lik == "zinb":
        ll = ref_log_zinb(x64, out["px_rate"].double(), out["px_r"].double(), out["px_dropout"].double())
    elif lik == "nb":
        ll = ref_log_nb(x64, out["px_rate"].double(), out["px_r"].double())
    else:
        ll = ref_log_poisson(x64, out["px_rate"].double())
    close(f"{name}/rec_from_outputs", -ll.sum(1).detach(), out["rec_loss"].detach())
    tot = (out["rec_loss"].double() + KL_WEIGHT * out["kl_z"].double() + out["kl_l"].double()).mean()
    close(f"{name}/loss_from_terms", tot.detach(), out["loss"].detach())
    # eval reference
    re = ref_forward(cfg, {k: v.clone() for k, v in P64.items()}, inp, None, None, None,
                     train=False)
    for k in ("qz_m", "qz_v", "ql_m", "ql_v"):
        if k in res["eval"]:
            close(f"{name}/eval/{k}", re[k], res["eval"][k])
    close(f"{name}/eval/px_scale_at_mean", re["px_scale"], res["eval"]["px_scale_at_mean"])
    close(f"{name}/eval/px_rate_at_mean", re["px_rate"], res["eval"]["px_rate_at_mean"])

    # --- Adam trajectory (dropout 0 cases only)
    if cfg["adam"]:
        assert cfg["dropout_rate"] == 0.0
        module.load_state_dict(state0)
        module.train()
        for p in module.parameters():
            p.grad = None
        opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad],
                               lr=ADAM_LR, eps=ADAM_EPS, weight_decay=ADAM_WD)
        ga = torch.Generator().manual_seed(70_000 + cfg["seed"])
        nz = torch.randn((ADAM_STEPS, N, L), generator=ga)
        nl = torch.randn((ADAM_STEPS, N, 1), generator=ga) if not cfg["use_observed_lib_size"] else None
        losses = []
        for s in range(ADAM_STEPS):
            opt.zero_grad()
            q = [nz[s]] + ([nl[s]] if nl is not None else [])
            with fixed_noise(q):
                _, _, lo = module.forward(t, loss_kwargs={"kl_weight": KL_WEIGHT})
            losses.append(lo.loss.detach().clone())
            lo.loss.backward()
            opt.step()
        res["adam"]["loss"] = torch.stack(losses)
        res["adam"]["noise_z"] = nz
        if nl is not None:
            res["adam"]["noise_library"] = nl
        res["adam"]["final"] = {k: v.detach().clone() for k, v in module.state_dict().items()
                                if "num_batches_tracked" not in k}
        # reference Adam (coupled L2, bias-corrected, params without a gradient untouched)
        Pr = {k: v.clone() for k, v in P64.items()}
        mom = {n: torch.zeros_like(Pr[n]) for n in param_names}
        vel = {n: torch.zeros_like(Pr[n]) for n in param_names}
        ref_losses = []
        for s in range(ADAM_STEPS):
            Pg = {k: v.clone().requires_grad_(k in param_names) for k, v in Pr.items()}
            rr = ref_forward(cfg, Pg, inp, nz[s].double(),
                             nl[s].double() if nl is not None else None, None, train=True)
            rr["loss"].backward()
            ref_losses.append(float(rr["loss"].detach()))
            for k, v in rr["newrun"].items():
                Pr[k] = v.detach()
            for n in param_names:
                gr = Pg[n].grad
                if gr is None or n in grads_none:
                    continue
                gr = gr + ADAM_WD * Pr[n]
                mom[n] = 0.9 * mom[n] + 0.1 * gr
                vel[n] = 0.999 * vel[n] + 0.001 * gr * gr
                mh = mom[n] / (1 - 0.9 ** (s + 1))
                vh = vel[n] / (1 - 0.999 ** (s + 1))
                Pr[n] = Pr[n] - ADAM_LR * mh / (torch.sqrt(vh) + ADAM_EPS)
        close(f"{name}/adam/loss", np.array(ref_losses), res["adam"]["loss"])
        for k, v in res["adam"]["final"].items():
            if is_prebn_bias(cfg, k):  # driven by gradient rounding noise only
                assert float((v.double() - P64[k]).abs().max()) <= 1e-4, k
                continue
            # compare the update, not the absolute value (updates are ~1e-2)
            close(f"{name}/adam/final/{k}", Pr[k] - P64[k], v.double() - P64[k],
                  rtol=5e-3, atol_rel=1e-3, atol=1e-6)

    print(f"  {name}: loss {float(out['loss'].detach()):.4f}  rec {float(out['rec_loss'].detach().mean()):.3f}  "
          f"max|err| loss {errs['loss']:.2e} qz_m {errs['qz_m']:.2e}  "
          f"no-grad {len(grads_none)}  adam {'yes' if cfg['adam'] else 'no'}")
    return cfg, inp, state0, grads_none, res


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def _np(v):
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    return np.ascontiguousarray(v)


def _put(grp, name, arr, dtype=np.float32):
    arr = _np(arr).astype(dtype)
    kw = {}
    if arr.size >= 256:
        kw = dict(compression="gzip", compression_opts=9, shuffle=True)
    grp.create_dataset(name, data=arr, **kw)


def _sattr(obj, key, s):
    obj.attrs[key] = np.bytes_(s)  # fixed-length ASCII string, easy to read from C


def write_case(path, name, cfg, inp, state0, grads_none, res):
    with h5py.File(path, "w") as f:
        _sattr(f, "case", name)
        _sattr(f, "scvi_version", scvi.__version__)
        _sattr(f, "torch_version", torch.__version__)
        f.attrs["format_version"] = np.int32(FORMAT_VERSION)
        _sattr(f, "source_data", inp["source"])
        c = f.create_group("config")
        for k in ("n_hidden", "n_latent", "n_layers", "n_continuous_cov"):
            c.attrs[k] = np.int32(cfg[k])
        c.attrs["n_input"] = np.int32(cfg["G"])
        c.attrs["n_cells"] = np.int32(cfg["N"])
        c.attrs["n_batch"] = np.int32(cfg["n_batch"])
        c.attrs["n_labels"] = np.int32(cfg["n_labels"])
        c.attrs["n_cat_covs"] = np.int32(len(cfg["n_cats_per_cov"]))
        if cfg["n_cats_per_cov"]:
            c.attrs["n_cats_per_cov"] = np.array(cfg["n_cats_per_cov"], np.int32)
        for k in ("use_observed_lib_size", "encode_covariates", "deeply_inject_covariates",
                  "log_variational"):
            c.attrs[k] = np.int32(bool(cfg[k]))
        for k in ("dispersion", "gene_likelihood", "latent_distribution", "use_batch_norm",
                  "use_layer_norm"):
            _sattr(c, k, cfg[k])
        _sattr(c, "batch_representation", "one-hot")
        c.attrs["dropout_rate"] = np.float64(cfg["dropout_rate"])
        c.attrs["kl_weight"] = np.float64(KL_WEIGHT)
        c.attrs["var_eps"] = np.float64(1e-4)
        c.attrs["adam"] = np.int32(bool(cfg["adam"]))
        _sattr(c, "scvi_version", scvi.__version__)
        _sattr(c, "torch_version", torch.__version__)

        gi = f.create_group("inputs")
        _put(gi, "x", inp["x"])
        _put(gi, "batch", inp["batch"], np.int32)
        _put(gi, "labels", inp["labels"], np.int32)
        if "cat_covs" in inp:
            _put(gi, "cat_covs", inp["cat_covs"], np.int32)
        if "cont_covs" in inp:
            _put(gi, "cont_covs", inp["cont_covs"])
        _put(gi, "source_cells", inp["cells"], np.int32)
        _put(gi, "source_genes", inp["genes"], np.int32)

        gp = f.create_group("params")
        names = []
        for k, v in state0.items():
            if "num_batches_tracked" in k:
                continue
            _put(gp, k, v)
            names.append(k)
        _sattr(gp, "names", "\n".join(names))

        gn = f.create_group("noise")
        _put(gn, "z", res["noise"]["z"])
        if "library" in res["noise"]:
            _put(gn, "library", res["noise"]["library"])
        if res["masks"]:
            gd = gn.create_group("dropout")
            for k, m in res["masks"].items():
                _put(gd, k, m, np.uint8)

        go = f.create_group("out")
        for k, v in res["out"].items():
            _put(go, k, v)

        gg = f.create_group("grads")
        for k, v in res["grads"].items():
            _put(gg, k, v)
        _sattr(gg, "grads_none", "\n".join(grads_none))
        gg.attrs["n_grads_none"] = np.int32(len(grads_none))

        if res["after"]:
            ga = f.create_group("after")
            for k, v in res["after"].items():
                _put(ga, k, v)

        ge = f.create_group("eval")
        for k, v in res["eval"].items():
            _put(ge, k, v)

        if res["adam"]:
            gad = f.create_group("adam")
            gad.attrs["lr"] = np.float64(ADAM_LR)
            gad.attrs["eps"] = np.float64(ADAM_EPS)
            gad.attrs["weight_decay"] = np.float64(ADAM_WD)
            gad.attrs["steps"] = np.int32(ADAM_STEPS)
            _put(gad, "loss", res["adam"]["loss"])
            _put(gad, "noise_z", res["adam"]["noise_z"])
            if "noise_library" in res["adam"]:
                _put(gad, "noise_library", res["adam"]["noise_library"])
            gf = gad.create_group("final")
            for k, v in res["adam"]["final"].items():
                _put(gf, k, v)


def main(argv):
    names = argv[1:] or list(CASES)
    print(f"scvi-tools {scvi.__version__}, torch {torch.__version__}, data {DATA}")
    results = {}
    for n in names:
        results[n] = run_case(n)
    # all checks passed: write
    for n, r in results.items():
        write_case(os.path.join(HERE, f"scvi_{n}.h5"), n, *r)
    tot = sum(os.path.getsize(os.path.join(HERE, f"scvi_{n}.h5")) for n in results)
    print(f"wrote {len(results)} files, {tot / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv)
