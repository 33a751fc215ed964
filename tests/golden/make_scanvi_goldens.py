#!/usr/bin/env python3
"""Generate the scANVI golden fixtures for atlasvi's C tests.

Run by hand (never by CI, which has no PyTorch), with scvi-tools 1.5.1 installed:

    python3 tests/golden/make_scanvi_goldens.py            # all cases + scanvi_labels.h5
    python3 tests/golden/make_scanvi_goldens.py default    # selected cases

Writes tests/golden/scanvi_<case>.h5 and tests/golden/scanvi_labels.h5. The layout is
documented in tests/golden/README_scanvi.md.

Every case builds ``scvi.module.SCANVAE`` directly, configured as ``scvi.model.SCANVI``
would configure it, gives it non-trivial weights with a short unexported pre-training
(semi-supervised loss, random noise), then records one training-mode step of the *real
scvi-tools code*: ``module.forward(full_tensors, loss_kwargs={"kl_weight": 0.5,
"labelled_tensors": labelled_tensors, "classification_ratio": 50})``, which is exactly what
``SemiSupervisedTrainingPlan.training_step`` calls. Every standard-normal draw and every
dropout mask of that call is generated here, handed to scvi through patches
(``torch.distributions.normal._standard_normal`` and ``nn.Dropout.forward``) and exported.

Self-consistency: an independent float64 re-implementation (model-spec.md sections 2, 3, 5,
9; the scVI part is ``make_goldens.ref_forward``) is run on the exported tensors only; its
outputs, losses, BatchNorm running statistics and gradients must agree with scvi-tools or
the script aborts before writing anything.
"""

from __future__ import annotations

import math
import os
import sys
from contextlib import contextmanager

import h5py
import numpy as np
import torch
import torch.distributions.normal as tdn
import torch.nn.functional as F
from torch.distributions import Categorical, Normal
from torch.distributions import kl_divergence as kl

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_goldens as mg  # noqa: E402  (scVI golden helpers: data, reference, writing)

import scvi  # noqa: E402
from scvi.module import SCANVAE  # noqa: E402

torch.set_num_threads(2)
torch.set_default_dtype(torch.float32)

KL_WEIGHT = mg.KL_WEIGHT  # 0.5
CLS_RATIO = 50.0  # SemiSupervisedTrainingPlan default classification_ratio
PRETRAIN_STEPS, PRETRAIN_LR = mg.PRETRAIN_STEPS, mg.PRETRAIN_LR
FORMAT_VERSION = 1
F32_EPS = float(torch.finfo(torch.float32).eps)  # torch clamp_probs eps (Categorical)

BASE = dict(mg.BASE)
BASE.update(data="kang", linear_classifier=False, n_hidden=32, n_latent=8, N=40, Nl=16, G=64,
            n_batch=2, n_labels=3, unlabelled_frac=0.35)

CASES = {
    # scANVI defaults (zinb, gene dispersion, BN both, 1 layer, MLP classifier) with small
    # H/L; dropout 0.1 -> every dropout mask exported
    "default": dict(seed=21, dropout_rate=0.1),
    "linear_nb": dict(seed=22, gene_likelihood="nb", linear_classifier=True),
    "layers2_b3": dict(seed=23, n_layers=2, n_batch=3, n_labels=4, dispersion="gene-batch"),
    "learned_lib": dict(seed=24, use_observed_lib_size=False),
}


def case_config(name):
    cfg = dict(BASE)
    cfg.update(CASES[name])
    cfg["adam"] = False
    return cfg


# --------------------------------------------------------------------------------------
# data: the scVI script's kang subset (N + Nl cells), split into the full minibatch and
# a disjoint labelled minibatch; some cells of the full minibatch are made unlabelled
# --------------------------------------------------------------------------------------
def make_inputs(cfg):
    N, Nl, K = cfg["N"], cfg["Nl"], cfg["n_labels"]
    c2 = dict(cfg, N=N + Nl)
    inp = mg.make_inputs(c2)  # codes: sorted unique values of the (N+Nl)-cell subset
    rng = np.random.default_rng(3000 + cfg["seed"])
    for _ in range(1000):
        lab = np.sort(rng.choice(N + Nl, Nl, replace=False))
        rest = np.setdiff1d(np.arange(N + Nl), lab)
        if len(set(inp["labels"][lab])) == K and len(set(inp["batch"][rest])) == cfg["n_batch"]:
            break
    else:
        raise RuntimeError("no labelled split covering every class")
    labels = inp["labels"][rest].copy()
    unl = rng.random(N) < cfg["unlabelled_frac"]
    unl[:2] = [True, False]  # at least one unlabelled and one labelled cell
    labels[unl] = K  # code K = the unlabelled category (last in the mapping)
    out = dict(x=inp["x"][rest], batch=inp["batch"][rest], labels=labels.astype(np.int32),
               x_l=inp["x"][lab], batch_l=inp["batch"][lab],
               labels_l=inp["labels"][lab].astype(np.int32),
               cells=inp["cells"][rest], cells_l=inp["cells"][lab], genes=inp["genes"],
               source=inp["source"])
    for k in ("library_log_means", "library_log_vars"):
        if k in inp:
            out[k] = inp[k]
    return out


def tensors_of(x, batch, labels):
    return {"X": torch.from_numpy(x),
            "batch": torch.from_numpy(batch.astype(np.int64)).unsqueeze(1),
            "labels": torch.from_numpy(labels.astype(np.int64)).unsqueeze(1)}


def build_module(cfg, inp):
    """SCANVAE as scvi.model.SCANVI.__init__ builds it (1.5.1): VAE defaults for everything
    SCANVI does not pass (encode_covariates False, deeply_inject True, one-hot batch,
    normal latent), use_size_factor_key False, library prior from _init_library_size."""
    kw = dict(n_input=cfg["G"], n_batch=cfg["n_batch"], n_labels=cfg["n_labels"],
              n_continuous_cov=0, n_cats_per_cov=None, n_hidden=cfg["n_hidden"],
              n_latent=cfg["n_latent"], n_layers=cfg["n_layers"],
              dropout_rate=cfg["dropout_rate"], dispersion=cfg["dispersion"],
              gene_likelihood=cfg["gene_likelihood"], use_size_factor_key=False,
              use_observed_lib_size=cfg["use_observed_lib_size"],
              library_log_means=None, library_log_vars=None,
              linear_classifier=cfg["linear_classifier"])
    if not cfg["use_observed_lib_size"]:
        kw["library_log_means"] = inp["library_log_means"]
        kw["library_log_vars"] = inp["library_log_vars"]
    return SCANVAE(**kw)


# --------------------------------------------------------------------------------------
# randomness tape: records (first pass) or replays (later passes) every standard-normal
# draw and every dropout mask, keyed by the module that asks and its call index
# --------------------------------------------------------------------------------------
ENCODERS = ("z_encoder", "l_encoder", "encoder_z2_z1")


class Tape:
    def __init__(self, module, seed):
        self.module = module
        self.g = torch.Generator().manual_seed(seed)
        self.noise = {}  # key "enc#call" -> tensor
        self.noise_order = []
        self.masks = {}  # (dropout module name, call) -> uint8 tensor
        self.mask_order = []
        self.record = True

    @contextmanager
    def active(self, record):
        self.record = record
        enc_calls = {n: 0 for n in ENCODERS}
        drop_calls = {}
        current = [None]
        hooks = []
        for n in ENCODERS:
            def pre(mod, args, n=n):
                current[0] = f"{n}#{enc_calls[n]}"
                enc_calls[n] += 1
            hooks.append(getattr(self.module, n).register_forward_pre_hook(pre))

        orig = tdn._standard_normal

        def fake(shape, dtype, device):
            key = current[0]
            assert key is not None, "a standard-normal draw outside the known encoders"
            current[0] = None  # one draw per encoder call
            if self.record:
                e = torch.randn(tuple(shape), generator=self.g)
                self.noise[key] = e
                self.noise_order.append(key)
            else:
                e = self.noise[key]
                assert tuple(e.shape) == tuple(shape), (key, e.shape, shape)
            return e.to(dtype=dtype, device=device)

        patched = []
        for name, m in self.module.named_modules():
            if isinstance(m, torch.nn.Dropout):
                drop_calls[name] = 0

                def fwd(x, name=name, p=m.p):
                    key = (name, drop_calls[name])
                    drop_calls[name] += 1
                    if self.record:
                        mk = (torch.rand(tuple(x.shape), generator=self.g) >= p).to(torch.uint8)
                        self.masks[key] = mk
                        self.mask_order.append(key)
                    else:
                        mk = self.masks[key]
                        assert mk.shape == x.shape
                    return x * (mk.to(x.dtype) / (1.0 - p))

                m.forward = fwd
                patched.append(m)
        tdn._standard_normal = fake
        try:
            yield
        finally:
            tdn._standard_normal = orig
            for m in patched:
                del m.forward
            for h in hooks:
                h.remove()


NOISE_NAMES = {"z_encoder#0": "z_full", "l_encoder#0": "library", "encoder_z2_z1#0": "z2",
               "z_encoder#1": "z_labelled"}


class Capture:
    """Forward hooks recording module outputs, a list per module (in call order)."""

    def __init__(self, module, names):
        self.out = {n: [] for n in names}
        self.hooks = []
        mods = dict(module.named_modules())
        for n in names:
            self.hooks.append(mods[n].register_forward_hook(
                lambda mod, i, o, n=n: self.out[n].append(o)))

    def remove(self):
        for h in self.hooks:
            h.remove()


CAP = ["z_encoder.var_encoder", "l_encoder.var_encoder", "z_encoder.mean_encoder",
       "encoder_z2_z1.var_encoder", "encoder_z2_z1.mean_encoder", "encoder_z2_z1",
       "decoder_z1_z2", "classifier"]


# --------------------------------------------------------------------------------------
# independent float64 reference (model-spec.md 2, 3, 5, 9; scVI part = mg.ref_forward)
# --------------------------------------------------------------------------------------
def _norms(cfg):
    ub, ul = cfg["use_batch_norm"], cfg["use_layer_norm"]
    return (ub in ("encoder", "both"), ub in ("decoder", "both"),
            ul in ("encoder", "both"), ul in ("decoder", "both"))


def ref_scanvi(cfg, P, inp, noise, masks, train=True):
    """noise: dict by NOISE_NAMES value (float64); masks: {(module, call): mask}."""
    N, K, L = cfg["N"], cfg["n_labels"], cfg["n_latent"]
    p = cfg["dropout_rate"]
    bn_enc, bn_dec, ln_enc, ln_dec = _norms(cfg)

    def mk(call):  # masks of call `call` keyed by module name, as mg.ref_fclayers wants
        return {n: m for (n, c), m in masks.items() if c == call} if masks else None

    # scVI part: z encoder (full batch), library, decoder, likelihood, kl_l (call 0 masks)
    o = mg.ref_forward(cfg, P, inp, noise["z_full"] if train else None,
                       noise.get("library") if train else None, mk(0), train=train)
    newrun = o["newrun"]

    def Pv():  # parameters with the BN running stats updated so far (chained calls)
        d = dict(P)
        d.update(newrun)
        return d

    def classifier(h, call):
        if cfg["linear_classifier"]:
            return h @ P["classifier.classifier.0.weight"].T + P["classifier.classifier.0.bias"]
        h = mg.ref_fclayers(Pv(), "classifier.classifier.0", h, [], cfg["n_layers"], True,
                            bn_enc, ln_enc, train, mk(call), p, newrun)
        return h @ P["classifier.classifier.1.weight"].T + P["classifier.classifier.1.bias"]

    z1 = o["z"]
    logits = classifier(z1, 0)
    q = torch.softmax(logits, 1)
    # enumerated rows: row k*N + i = cell i with label k (scvi broadcast_labels)
    z1s = z1.repeat(K, 1)
    ys = [F.one_hot(torch.arange(K).repeat_interleave(N), K).double()] if K > 1 else []
    h = mg.ref_fclayers(Pv(), "encoder_z2_z1.encoder", z1s, ys, cfg["n_layers"], True,
                        bn_enc, ln_enc, train, mk(0), p, newrun)
    qz2_m = h @ P["encoder_z2_z1.mean_encoder.weight"].T + P["encoder_z2_z1.mean_encoder.bias"]
    qz2_v = torch.exp(h @ P["encoder_z2_z1.var_encoder.weight"].T
                      + P["encoder_z2_z1.var_encoder.bias"]) + 1e-4
    z2 = qz2_m + torch.sqrt(qz2_v) * noise["z2"] if train else qz2_m
    h = mg.ref_fclayers(Pv(), "decoder_z1_z2.decoder", z2, ys, cfg["n_layers"], True,
                        bn_dec, ln_dec, train, None, 0.0, newrun)
    pz1_m = h @ P["decoder_z1_z2.mean_decoder.weight"].T + P["decoder_z1_z2.mean_decoder.bias"]
    pz1_v = torch.exp(h @ P["decoder_z1_z2.var_decoder.weight"].T
                      + P["decoder_z1_z2.var_decoder.bias"])
    LOG2PI = math.log(2 * math.pi)
    A = 0.5 * (LOG2PI + torch.log(pz1_v) + (z1s - pz1_m) ** 2 / pz1_v).sum(1)  # -log N(z1)
    C = 0.5 * (qz2_v + qz2_m ** 2 - 1.0 - torch.log(qz2_v)).sum(1)  # KL(qz2 || N(0,1))
    A = A.view(K, N).T  # [N,K]
    C = C.view(K, N).T
    qz_m, qz_v = o["qz_m"], o["qz_v"]
    log_qz1 = -0.5 * (LOG2PI + torch.log(qz_v) + (z1 - qz_m) ** 2 / qz_v).sum(1)
    nll = o["rec_loss"]
    sum_qA = (q * A).sum(1)
    sum_qC = (q * C).sum(1)
    prior = P["y_prior"].expand(N, K)
    qn = q / q.sum(1, keepdim=True)
    clampl = lambda t: torch.log(t.clamp(F32_EPS, 1 - F32_EPS))  # noqa: E731
    kl_cat = (qn * (clampl(qn) - clampl(prior / prior.sum(1, keepdim=True)))).sum(1)
    kl_l = o["kl_l"]
    rec = nll + log_qz1 + sum_qA
    kll = sum_qC + kl_cat + kl_l
    loss_unl = torch.mean(rec + KL_WEIGHT * kll)
    r = dict(qz_m=qz_m, qz_v=qz_v, z=z1, library=o["library"], class_logits=logits, probs=q,
             qz2_m=qz2_m, qz2_v=qz2_v, z2=z2, pz1_m=pz1_m, pz1_v=pz1_v, A=A, C=C,
             nll=nll, log_qz1=log_qz1, sum_qA=sum_qA, sum_qC=sum_qC, kl_cat=kl_cat, kl_l=kl_l,
             reconstruction_loss=rec, kl_local=kll, loss_unlabelled=loss_unl,
             px_scale=o["px_scale"], px_rate=o["px_rate"], px_r=o["px_r"],
             px_dropout=o["px_dropout"])
    for k in ("ql_m", "ql_v"):
        if k in o:
            r[k] = o[k]
    # labelled minibatch: z encoder (second call, chained BN stats), classifier on mu
    xl = torch.from_numpy(inp["x_l"]).double()
    bl = torch.from_numpy(inp["batch_l"]).long()
    covs = mg._onehots([bl], [cfg["n_batch"]]) if cfg["encode_covariates"] else []
    hq = mg.ref_fclayers(Pv(), "z_encoder.encoder", torch.log1p(xl), covs, cfg["n_layers"],
                         cfg["deeply_inject_covariates"], bn_enc, ln_enc, train, mk(1), p,
                         newrun)
    qz_m_l = hq @ P["z_encoder.mean_encoder.weight"].T + P["z_encoder.mean_encoder.bias"]
    qz_v_l = torch.exp(hq @ P["z_encoder.var_encoder.weight"].T
                       + P["z_encoder.var_encoder.bias"]) + 1e-4
    logits_l = classifier(qz_m_l, 1)
    yl = torch.from_numpy(inp["labels_l"]).long()
    ce = (torch.logsumexp(logits_l, 1) - logits_l.gather(1, yl[:, None])[:, 0]).mean()
    r.update(qz_m_l=qz_m_l, qz_v_l=qz_v_l, logits_l=logits_l, classification_loss=ce,
             loss=loss_unl + CLS_RATIO * ce, newrun=newrun)
    return r


def ref_eval(cfg, P, inp):
    """Eval mode: z encoder with running stats, classifier on qz_m (predict, soft)."""
    bn_enc, _, ln_enc, _ = _norms(cfg)
    x = torch.from_numpy(inp["x"]).double()
    b = torch.from_numpy(inp["batch"]).long()
    h = mg.ref_fclayers(P, "z_encoder.encoder", torch.log1p(x),
                        mg._onehots([b], [cfg["n_batch"]]) if cfg["encode_covariates"] else [],
                        cfg["n_layers"],
                        cfg["deeply_inject_covariates"], bn_enc, ln_enc, False, None, 0.0, {})
    m = h @ P["z_encoder.mean_encoder.weight"].T + P["z_encoder.mean_encoder.bias"]
    v = torch.exp(h @ P["z_encoder.var_encoder.weight"].T + P["z_encoder.var_encoder.bias"]) + 1e-4
    if cfg["linear_classifier"]:
        lg = m @ P["classifier.classifier.0.weight"].T + P["classifier.classifier.0.bias"]
    else:
        hc = mg.ref_fclayers(P, "classifier.classifier.0", m, [], cfg["n_layers"], True, bn_enc,
                             ln_enc, False, None, 0.0, {})
        lg = hc @ P["classifier.classifier.1.weight"].T + P["classifier.classifier.1.bias"]
    return dict(qz_m=m, qz_v=v, logits=lg, probs=torch.softmax(lg, 1))


# --------------------------------------------------------------------------------------
# one case
# --------------------------------------------------------------------------------------
def run_case(name):
    cfg = case_config(name)
    inp = make_inputs(cfg)
    N, K, L, G = cfg["N"], cfg["n_labels"], cfg["n_latent"], cfg["G"]
    torch.manual_seed(cfg["seed"])
    module = build_module(cfg, inp)
    t = tensors_of(inp["x"], inp["batch"], inp["labels"])
    tl = tensors_of(inp["x_l"], inp["batch_l"], inp["labels_l"])
    lkw = {"kl_weight": KL_WEIGHT, "labelled_tensors": tl, "classification_ratio": CLS_RATIO}

    # --- short pre-training (random noise and dropout, not exported)
    module.train()
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad],
                           lr=PRETRAIN_LR, eps=mg.ADAM_EPS, weight_decay=mg.ADAM_WD)
    for _ in range(PRETRAIN_STEPS):
        opt.zero_grad()
        _, _, lo = module.forward(t, loss_kwargs=lkw)
        lo.loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    state0 = {k: v.detach().clone() for k, v in module.state_dict().items()}
    param_names = [n for n, _ in module.named_parameters()]
    P64 = {k: v.double() for k, v in state0.items() if "num_batches_tracked" not in k}
    res = {"eval": {}, "out": {}, "grads": {}, "grads_unl": {}, "after": {}}

    # --- eval mode: predict(soft=True, use_posterior_mean=True) = softmax(classify(x))
    module.eval()
    cap = Capture(module, CAP)
    with torch.no_grad():
        lg = module.classify(t["X"], batch_index=t["batch"], use_posterior_mean=True)
    ev = res["eval"]
    ev["qz_m"] = cap.out["z_encoder.mean_encoder"][0]
    ev["qz_v"] = torch.exp(cap.out["z_encoder.var_encoder"][0]) + module.z_encoder.var_eps
    ev["logits"] = lg
    ev["probs"] = F.softmax(lg, dim=-1)
    cap.remove()

    # --- train-mode step with recorded noise and dropout masks (the real scvi call)
    module.train()
    tape = Tape(module, 60_000 + cfg["seed"])
    cap = Capture(module, CAP)
    with tape.active(record=True):
        inf, gen, lo = module.forward(t, loss_kwargs=lkw)
    lo.loss.backward()
    cap.remove()
    order = [NOISE_NAMES[k] for k in tape.noise_order]
    expect = ["z_full"] + ([] if cfg["use_observed_lib_size"] else ["library"]) + ["z2", "z_labelled"]
    assert order == expect, order
    noise = {NOISE_NAMES[k]: v for k, v in tape.noise.items()}

    out = res["out"]
    qz, z1 = inf["qz"], inf["z"]
    out["qz_m"] = qz.loc
    out["qz_v"] = torch.exp(cap.out["z_encoder.var_encoder"][0]) + module.z_encoder.var_eps
    out["z"], out["library"] = z1, inf["library"]
    if not cfg["use_observed_lib_size"]:
        out["ql_m"] = inf["ql"].loc
        out["ql_v"] = torch.exp(cap.out["l_encoder.var_encoder"][0]) + module.l_encoder.var_eps
    px = gen["px"]
    out["px_scale"], out["px_rate"] = px.scale, px.mu
    th = px.theta
    out["px_r"] = th.expand(N, G) if th.dim() == 1 or th.shape[0] == 1 else th
    if cfg["gene_likelihood"] == "zinb":
        out["px_dropout"] = px.zi_logits
    assert len(cap.out["classifier"]) == 2 and len(cap.out["encoder_z2_z1"]) == 1
    out["class_logits"] = cap.out["classifier"][0]
    out["probs"] = F.softmax(out["class_logits"], dim=-1)
    qz2, z2 = cap.out["encoder_z2_z1"][0]
    out["qz2_m"] = qz2.loc
    out["qz2_v"] = torch.exp(cap.out["encoder_z2_z1.var_encoder"][0]) + module.encoder_z2_z1.var_eps
    out["z2"] = z2
    out["pz1_m"], out["pz1_v"] = cap.out["decoder_z1_z2"][0]
    out["qz_m_l"] = cap.out["z_encoder.mean_encoder"][1]
    out["qz_v_l"] = torch.exp(cap.out["z_encoder.var_encoder"][1]) + module.z_encoder.var_eps
    out["reconstruction_loss"] = lo.reconstruction_loss["reconstruction_loss"]
    out["kl_local"] = lo.kl_local["kl_local"]
    out["classification_loss"] = lo.classification_loss
    out["logits_l"] = lo.logits
    assert torch.equal(lo.true_labels.view(-1), tl["labels"].view(-1))
    out["loss"] = lo.loss
    # parts, with torch from the recorded intermediates (as scvi's loss() computes them)
    with torch.no_grad():
        z1s = z1.repeat(K, 1)
        A = -Normal(out["pz1_m"], torch.sqrt(out["pz1_v"])).log_prob(z1s).sum(-1)
        C = kl(qz2, Normal(torch.zeros_like(qz2.loc), torch.ones_like(qz2.scale))).sum(-1)
        out["A"], out["C"] = A.view(K, -1).t(), C.view(K, -1).t()
        q = out["probs"]
        out["nll"] = -px.log_prob(t["X"]).sum(-1)
        out["log_qz1"] = qz.log_prob(z1).sum(-1)
        out["sum_qA"] = (out["A"] * q).sum(-1)
        out["sum_qC"] = (out["C"] * q).sum(-1)
        out["kl_cat"] = kl(Categorical(probs=q), Categorical(probs=module.y_prior.repeat(N, 1)))
        if cfg["use_observed_lib_size"]:
            out["kl_l"] = torch.zeros(N)
        else:
            m_, v_ = module._compute_local_library_params(t["batch"])
            out["kl_l"] = kl(inf["ql"], Normal(m_, torch.sqrt(v_))).sum(1)
        mg.close(f"{name}/rec_parts", out["nll"] + out["log_qz1"] + out["sum_qA"],
                 out["reconstruction_loss"])
        mg.close(f"{name}/kl_parts", out["sum_qC"] + out["kl_cat"] + out["kl_l"], out["kl_local"])
    grads_none = []
    for n, p in module.named_parameters():
        if p.grad is None:
            grads_none.append(n)
        else:
            res["grads"][n] = p.grad.detach().clone()
    after = {k: v.detach().clone() for k, v in module.state_dict().items() if "running_" in k}
    res["after"] = after

    # --- the unlabelled-only path (labelled_tensors=None: no classification term), same
    # noise / masks (replayed), from params/ again
    module.load_state_dict(state0)
    for p_ in module.parameters():
        p_.grad = None
    with tape.active(record=False):
        _, _, lo_u = module.forward(t, loss_kwargs={"kl_weight": KL_WEIGHT})
    lo_u.loss.backward()
    assert lo_u.classification_loss is None
    out["loss_unlabelled"] = lo_u.loss
    grads_none_u = []
    for n, p_ in module.named_parameters():
        if p_.grad is None:
            grads_none_u.append(n)
        else:
            res["grads_unl"][n] = p_.grad.detach().clone()
    mg.close(f"{name}/loss_unl_vs_total",
             float(lo.loss.detach()) - CLS_RATIO * float(lo.classification_loss.detach()),
             float(lo_u.loss.detach()),
             rtol=1e-5)

    # --- reference check
    errs = {}
    Pr = {k: v.clone().requires_grad_(k in param_names and k != "y_prior")
          for k, v in P64.items()}
    noise64 = {k: v.double() for k, v in noise.items()}
    masks = dict(tape.masks)
    r = ref_scanvi(cfg, Pr, inp, noise64, masks, train=True)
    r["loss"].backward()
    for k, v in out.items():
        if k in r:
            errs[k] = mg.close(f"{name}/out/{k}", r[k].detach(), v.detach())
    for k, v in after.items():
        if k in r["newrun"]:
            mg.close(f"{name}/after/{k}", r["newrun"][k], v)
        else:
            assert torch.equal(v, state0[k]), k  # library encoder with observed library
    ok_grads = 0
    for n in param_names:
        gref = Pr[n].grad
        if n in grads_none:
            assert gref is None or float(gref.abs().max()) == 0.0, n
        elif mg.is_prebn_bias(cfg, n):
            wmax = float(res["grads"][n[: -len("bias")] + "weight"].abs().max())
            assert float(res["grads"][n].abs().max()) <= 1e-3 * wmax + 1e-6, n
            assert float(gref.abs().max()) <= 1e-9 * (1 + wmax), n
        else:
            errs["grad:" + n] = mg.close(f"{name}/grads/{n}", gref, res["grads"][n], rtol=2e-3,
                                         atol_rel=2e-4, atol=1e-6)
            ok_grads += 1
    # unlabelled-path gradients
    Pu = {k: v.clone().requires_grad_(k in param_names and k != "y_prior")
          for k, v in P64.items()}
    ru = ref_scanvi(cfg, Pu, inp, noise64, {k: m for k, m in masks.items()}, train=True)
    ru["loss_unlabelled"].backward()
    errs["loss_unlabelled"] = mg.close(f"{name}/loss_unlabelled", ru["loss_unlabelled"].detach(),
                                       out["loss_unlabelled"].detach())
    for n in param_names:
        gref = Pu[n].grad
        if n in grads_none_u:
            assert gref is None or float(gref.abs().max()) == 0.0, n
        elif mg.is_prebn_bias(cfg, n):
            wmax = float(res["grads_unl"][n[: -len("bias")] + "weight"].abs().max())
            assert float(res["grads_unl"][n].abs().max()) <= 1e-3 * wmax + 1e-6, n
        else:
            mg.close(f"{name}/grads_unlabelled/{n}", gref, res["grads_unl"][n], rtol=2e-3,
                     atol_rel=2e-4, atol=1e-6)
    # eval
    re = ref_eval(cfg, P64, inp)
    for k in ("qz_m", "qz_v", "logits", "probs"):
        errs["eval:" + k] = mg.close(f"{name}/eval/{k}", re[k], ev[k])

    loss = float(out["loss"])
    rel = errs["loss"] / abs(loss)
    print(f"  {name}: loss {loss:.4f} (CE {float(out['classification_loss']):.4f}, "
          f"unl {float(out['loss_unlabelled']):.4f})  |err| loss {errs['loss']:.2e} "
          f"(rel {rel:.1e}) rec {errs['reconstruction_loss']:.2e} kl {errs['kl_local']:.2e} "
          f"CE {errs['classification_loss']:.2e} probs {errs['probs']:.2e} "
          f"max grad err {max(v for k, v in errs.items() if k.startswith('grad:')):.2e} "
          f"({ok_grads} grads), no-grad {len(grads_none)}, unl no-grad {len(grads_none_u)}")
    assert rel <= 1e-3
    return dict(cfg=cfg, inp=inp, state0=state0, grads_none=grads_none,
                grads_none_u=grads_none_u, res=res, tape=tape, order=order, errs=errs)


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
_put, _sattr = mg._put, mg._sattr


def write_case(path, name, R):
    cfg, inp, state0, res, tape = R["cfg"], R["inp"], R["state0"], R["res"], R["tape"]
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
        c.attrs["n_cells_labelled"] = np.int32(cfg["Nl"])
        c.attrs["n_batch"] = np.int32(cfg["n_batch"])
        c.attrs["n_labels"] = np.int32(cfg["n_labels"])
        c.attrs["n_cat_covs"] = np.int32(0)
        for k in ("use_observed_lib_size", "encode_covariates", "deeply_inject_covariates",
                  "log_variational", "linear_classifier"):
            c.attrs[k] = np.int32(bool(cfg[k]))
        c.attrs["use_posterior_mean"] = np.int32(1)
        for k in ("dispersion", "gene_likelihood", "latent_distribution", "use_batch_norm",
                  "use_layer_norm"):
            _sattr(c, k, cfg[k])
        _sattr(c, "batch_representation", "one-hot")
        c.attrs["dropout_rate"] = np.float64(cfg["dropout_rate"])
        c.attrs["kl_weight"] = np.float64(KL_WEIGHT)
        c.attrs["classification_ratio"] = np.float64(CLS_RATIO)
        c.attrs["var_eps"] = np.float64(1e-4)
        c.attrs["adam"] = np.int32(0)
        _sattr(c, "scvi_version", scvi.__version__)
        _sattr(c, "torch_version", torch.__version__)

        gi = f.create_group("inputs")
        _put(gi, "x", inp["x"])
        _put(gi, "batch", inp["batch"], np.int32)
        _put(gi, "labels", inp["labels"], np.int32)
        _put(gi, "x_l", inp["x_l"])
        _put(gi, "batch_l", inp["batch_l"], np.int32)
        _put(gi, "labels_l", inp["labels_l"], np.int32)
        _put(gi, "source_cells", inp["cells"], np.int32)
        _put(gi, "source_cells_l", inp["cells_l"], np.int32)
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
        for key in tape.noise_order:
            _put(gn, NOISE_NAMES[key], tape.noise[key])
        _sattr(gn, "order", "\n".join(R["order"]))
        _sattr(gn, "drawn_by", "\n".join(k.replace("#", " call ") for k in tape.noise_order))
        if tape.masks:
            gd = gn.create_group("dropout")
            for (mname, call) in tape.mask_order:
                grp = gd.require_group(mname)
                _put(grp, str(call), tape.masks[(mname, call)], np.uint8)
            _sattr(gd, "order", "\n".join(f"{m}/{c}" for m, c in tape.mask_order))

        go = f.create_group("out")
        for k, v in res["out"].items():
            v = v.detach()
            _put(go, k, v.reshape(1) if v.dim() == 0 else v)

        for gname, key, gnone in (("grads", "grads", R["grads_none"]),
                                  ("grads_unlabelled", "grads_unl", R["grads_none_u"])):
            gg = f.create_group(gname)
            for k, v in res[key].items():
                _put(gg, k, v)
            _sattr(gg, "grads_none", "\n".join(gnone))
            gg.attrs["n_grads_none"] = np.int32(len(gnone))

        ga = f.create_group("after")
        for k, v in res["after"].items():
            _put(ga, k, v)

        ge = f.create_group("eval")
        for k, v in res["eval"].items():
            _put(ge, k, v)


# --------------------------------------------------------------------------------------
# label mapping and max_epochs (scvi.model.SCANVI), scanvi_labels.h5
# --------------------------------------------------------------------------------------
def labels_reference():
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from scvi.model import SCANVI, SCVI

    rng = np.random.default_rng(7)
    res = {}

    def mapping(values, unlabeled, as_categorical=None):
        n = len(values)
        a = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, (n, 5)).astype(np.float32)))
        col = pd.Series(values, index=a.obs_names)
        if as_categorical is not None:
            col = pd.Categorical(values, categories=as_categorical)
        a.obs["ct"] = col
        SCANVI.setup_anndata(a, labels_key="ct", unlabeled_category=unlabeled)
        m = SCANVI(a, n_hidden=4, n_latent=2)
        reg = m.adata_manager.get_state_registry("labels")
        codes = np.asarray(m.adata_manager.get_from_registry("labels")).ravel()
        return dict(mapping=list(reg.categorical_mapping), codes=codes.astype(np.int32),
                    n_labels=int(m.module.n_labels), values=list(values))

    # an object column whose unlabeled category sorts in the middle
    vals = ["T", "mono", "Unknown", "B", "T", "Unknown", "mono", "B", "T", "Unknown"]
    res["middle"] = mapping(vals, "Unknown")
    # no unlabeled cell at all: the unlabeled category is appended last
    res["absent"] = mapping(["T", "mono", "B", "T", "mono", "B"], "Unknown")
    # a pandas Categorical with a non-sorted category order
    res["categorical_unsorted"] = mapping(vals, "Unknown",
                                          as_categorical=["mono", "Unknown", "T", "B"])
    assert res["middle"]["mapping"] == ["B", "T", "mono", "Unknown"], res["middle"]

    # default max_epochs of SCANVI.from_scvi_model(...).train(): capture what train() hands
    # to the train runner (no training is run)
    class _Stop(Exception):
        pass

    epochs = {}
    for n_obs in (1000, 12261, 100_000, 400_000, 1_000_000):
        a = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, (n_obs, 5)).astype(np.float32)))
        a.obs["ct"] = pd.Categorical(rng.choice(["a", "b", "Unknown"], n_obs))
        SCVI.setup_anndata(a, labels_key="ct")
        sv = SCVI(a, n_hidden=4, n_latent=2)
        sv.is_trained_ = True  # from_scvi_model only checks this flag; weights do not matter
        scan = SCANVI.from_scvi_model(sv, unlabeled_category="Unknown")
        direct = SCANVI(a, n_hidden=4, n_latent=2) if n_obs <= 12261 else None
        got = []
        for mdl in (scan, direct):
            if mdl is None:
                got.append(-1)
                continue

            def runner(*args, max_epochs=None, **kw):
                got.append(max_epochs)
                raise _Stop

            mdl._train_runner_cls = runner
            try:
                mdl.train()
            except _Stop:
                pass
        epochs[n_obs] = got
    res["max_epochs"] = epochs
    from scvi.model._utils import get_max_epochs_heuristic
    res["heuristic"] = {n: get_max_epochs_heuristic(n) for n in epochs}
    return res


def write_labels(path, res):
    with h5py.File(path, "w") as f:
        _sattr(f, "scvi_version", scvi.__version__)
        _sattr(f, "torch_version", torch.__version__)
        f.attrs["format_version"] = np.int32(FORMAT_VERSION)
        for k in ("middle", "absent", "categorical_unsorted"):
            g = f.create_group(k)
            _sattr(g, "values", "\n".join(res[k]["values"]))
            _sattr(g, "categorical_mapping", "\n".join(res[k]["mapping"]))
            _sattr(g, "unlabeled_category", "Unknown")
            g.attrs["n_labels"] = np.int32(res[k]["n_labels"])
            _put(g, "codes", res[k]["codes"], np.int32)
        g = f.create_group("max_epochs")
        n = sorted(res["max_epochs"])
        _put(g, "n_obs", np.array(n, np.int32), np.int32)
        _put(g, "from_scvi_model", np.array([res["max_epochs"][k][0] for k in n]), np.int32)
        _put(g, "direct", np.array([res["max_epochs"][k][1] for k in n]), np.int32)
        _put(g, "heuristic", np.array([res["heuristic"][k] for k in n]), np.int32)


def main(argv):
    names = [a for a in argv[1:] if a != "labels"] or list(CASES)
    print(f"scvi-tools {scvi.__version__}, torch {torch.__version__}, data {mg.DATA}")
    results = {n: run_case(n) for n in names}
    lab = labels_reference() if (len(argv) == 1 or "labels" in argv) else None
    for n, R in results.items():
        write_case(os.path.join(HERE, f"scanvi_{n}.h5"), n, R)
    files = [f"scanvi_{n}.h5" for n in results]
    if lab is not None:
        print("  labels:", {k: lab[k]["mapping"] for k in ("middle", "absent", "categorical_unsorted")},
              "max_epochs", lab["max_epochs"], "heuristic", lab["heuristic"])
        write_labels(os.path.join(HERE, "scanvi_labels.h5"), lab)
        files.append("scanvi_labels.h5")
    tot = sum(os.path.getsize(os.path.join(HERE, fn)) for fn in files)
    print(f"wrote {len(files)} files, {tot / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv)
