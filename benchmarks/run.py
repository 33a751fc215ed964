#!/usr/bin/env python3
"""atlasvi vs scvi-tools: one command that builds, simulates, trains both and writes
docs/benchmarks.md (tables, and PNG plots when matplotlib imports).

    python3 benchmarks/run.py                       # 10k and 100k cells (minutes)
    python3 benchmarks/run.py --sizes 10k,100k,1m   # adds 1M; scvi-tools runs a fixed
                                                    # number of steps per epoch there

Both trainers get the same simulated file (`atlasvi simulate`: 2000 genes, 4 batches,
10 cell types, seed 0), default scVI, batch 128, train_size 0.9, the same number of
epochs and threads, validation once, after the last epoch. cells/s = training cells x
epochs / seconds of the training call (file reading and setup excluded, validation at
the end included, for both). Peak RSS is the whole process (/usr/bin/time -v).

The harness itself needs only the standard library. scvi-tools comes from the first of
--python, a python3 that imports scvi, or a venv it creates under the work directory
(pip install scvi-tools); nothing of it is committed. The speed-up history and other
prose live in benchmarks/notes.md and are copied into the report.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
# epochs per size (both trainers); scvi-tools steps per epoch where capped (0: all)
DEFAULT_EPOCHS = {"10k": 5, "100k": 1, "1m": 1}
DEFAULT_SCVI_STEPS = {"10k": 0, "100k": 0, "1m": 300}


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


def run(cmd, env=None, capture=True):
    log(" ".join(cmd))
    p = subprocess.run(cmd, env=env, text=True, stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.STDOUT if capture else None)
    if p.returncode != 0:
        if capture:
            sys.stderr.write(p.stdout[-4000:])
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}")
    return p.stdout if capture else ""


def peak_rss_mib(text):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return int(m.group(1)) / 1024.0 if m else None


def cpu_seconds(text):
    u = re.search(r"User time \(seconds\): ([0-9.]+)", text)
    s = re.search(r"System time \(seconds\): ([0-9.]+)", text)
    return float(u.group(1)) + float(s.group(1)) if u and s else None


def timed(cmd, env):
    """Runs cmd under /usr/bin/time -v; returns (output, peak RSS MiB, wall s, CPU s)."""
    t0 = time.perf_counter()
    out = run(["/usr/bin/time", "-v"] + cmd, env=env)
    return out, peak_rss_mib(out), time.perf_counter() - t0, cpu_seconds(out)


def find_python(args, work):
    cands = [args.python] if args.python else []
    cands += [sys.executable, shutil.which("python3") or ""]
    for py in cands:
        if py and subprocess.run([py, "-c", "import scvi"], capture_output=True).returncode == 0:
            return py
    venv = os.path.join(work, "venv")
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        run([sys.executable, "-m", "venv", venv], capture=False)
        run([py, "-m", "pip", "install", "-q", "scvi-tools", "matplotlib"], capture=False)
    return py


def thread_env(threads):
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    return env


def bench_atlasvi(exe, data, epochs, threads, work, tag):
    metrics = os.path.join(work, f"metrics_{tag}.jsonl")
    cmd = [exe, "train", data, "--batch-key", "batch", "--max-epochs", str(epochs),
           "--batch-size", "128", "--train-size", "0.9", "--threads", str(threads),
           "--check-val-every-n-epoch", str(epochs), "--metrics", metrics, "--no-progress",
           "--model-out", os.path.join(work, f"model_{tag}.h5")]
    out, rss, wall, cpu = timed(cmd, thread_env(threads))
    rows = [json.loads(l) for l in open(metrics) if l.strip()]
    last = rows[-1]
    n = int(re.search(r"training scVI on (\d+) cells", out).group(1))
    n_train = -(-9 * n // 10)
    secs = last["seconds"]
    r = {"impl": "atlasvi", "n_cells": n, "epochs": epochs, "cells_trained": n_train * epochs,
         "seconds_train": secs, "cells_per_s": n_train * epochs / secs,
         "elbo_validation": last.get("elbo_validation"), "elbo_train": last.get("elbo_train"),
         "peak_rss_mib": rss, "wall_s": wall,
         # whole process (file reading and model writing included): favours scvi-tools
         "cpu_seconds_train": cpu}
    for k in ("t_data", "t_compute", "t_allreduce", "t_validation"):
        if k in last:
            r[k] = last[k]
    return r


def bench_scvi(py, data, epochs, threads, steps):
    cmd = [py, os.path.join(ROOT, "benchmarks", "scvi_tools_train.py"), data, "--epochs",
           str(epochs), "--threads", str(threads), "--batch-size", "128"]
    if steps:
        cmd += ["--max-steps-per-epoch", str(steps)]
    out, rss, wall, _ = timed(cmd, thread_env(threads))
    line = [l for l in out.splitlines() if l.startswith("BENCH_JSON ")][-1]
    r = json.loads(line[len("BENCH_JSON "):])
    r["peak_rss_mib"] = rss
    r["wall_s"] = wall
    return r


def step_bench(exe_dir, threads, work):
    """The per-op step profile (benchmarks/step_bench.c) when it was built."""
    exe = os.path.join(exe_dir, "step_bench")
    if not os.path.exists(exe):
        return None
    env = thread_env(threads)
    env.setdefault("OMP_WAIT_POLICY", "passive")  # as atlasvi itself (src/main.c)
    out = run([exe, "--threads", str(threads), "--reps", "100", "--json"], env=env)
    line = [l for l in out.splitlines() if l.startswith("STEP_JSON ")][-1]
    return json.loads(line[len("STEP_JSON "):])


def fmt(x, d=0):
    if x is None:
        return "—"
    return f"{x:,.{d}f}"


def cpu_rate(x):
    c = x.get("cpu_seconds_train")
    return x["cells_trained"] / c if c else None


SCALING_BEGIN, SCALING_END = "<!-- scaling:begin -->", "<!-- scaling:end -->"


def kept_sections(path):
    """The section benchmarks/scaling.py writes between its markers in the old report, so
    that regenerating the rest does not drop it ("" when there is none)."""
    if not os.path.exists(path):
        return ""
    old = open(path).read()
    if SCALING_BEGIN not in old or SCALING_END not in old:
        return ""
    a, b = old.index(SCALING_BEGIN), old.index(SCALING_END) + len(SCALING_END)
    return old[a:b] + "\n"


def write_report(path, res, meta, steps_prof, plots):
    L = []
    L.append("# Benchmarks: atlasvi vs scvi-tools (CPU)\n")
    L.append("Generated by `python3 benchmarks/run.py " + meta["argv"] + "` on " + meta["date"] +
             ". Do not edit by hand: prose lives in `benchmarks/notes.md`.\n")
    L.append(f"Machine: {meta['cpu']}, {meta['cores']} cores; {meta['threads']} threads per "
             f"trainer; scvi-tools {meta.get('scvi_version', '?')} (torch "
             f"{meta.get('torch_version', '?')}). Default scVI (128 hidden, 10 latent, 1 layer, "
             "ZINB, gene dispersion, batch norm), batch 128, train_size 0.9, 2000 genes, 4 "
             "batches, 10 cell types (`atlasvi simulate --seed 0`). The machine is shared: "
             "timings are noisy, compare ratios taken in the same run.\n")
    L.append("## Throughput and held-out ELBO\n")
    L.append("| cells | trainer | epochs | steps/epoch | cells/s | s/epoch | cells per CPU-s | "
             "peak RSS MiB | held-out ELBO | train ELBO |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for tag, r in res.items():
        for impl in ("atlasvi", "scvi"):
            x = r.get(impl)
            if not x:
                continue
            n_train = -(-9 * x["n_cells"] // 10)
            full_steps = -(-n_train // 128)
            st = x.get("max_steps_per_epoch") or 0
            steps = f"{st} of {full_steps} (capped)" if st and st < full_steps else str(full_steps)
            spe = x["seconds_train"] / x["epochs"]
            L.append(f"| {tag} | {x['impl']} | {x['epochs']} | {steps} | "
                     f"{fmt(x['cells_per_s'])} | {fmt(spe, 1)} | {fmt(cpu_rate(x))} | "
                     f"{fmt(x['peak_rss_mib'])} | "
                     f"{fmt(x['elbo_validation'], 1)} | {fmt(x['elbo_train'], 1)} |")
    L.append("")
    L.append("## atlasvi / scvi-tools\n")
    L.append("| cells | cells/s ratio | cells per CPU-s ratio | peak RSS ratio | "
             "held-out ELBO atlasvi − scvi-tools |")
    L.append("| --- | --- | --- | --- | --- |")
    for tag, r in res.items():
        a, s = r.get("atlasvi"), r.get("scvi")
        if not (a and s):
            continue
        capped = s.get("max_steps_per_epoch") and s["cells_trained"] < a["cells_trained"]
        de = None
        if a["elbo_validation"] is not None and s["elbo_validation"] is not None and not capped:
            de = a["elbo_validation"] - s["elbo_validation"]
        cr = (f"{cpu_rate(a) / cpu_rate(s):.2f}x" if cpu_rate(a) and cpu_rate(s) else "—")
        L.append(f"| {tag} | {a['cells_per_s'] / s['cells_per_s']:.2f}x | {cr} | "
                 f"{a['peak_rss_mib'] / s['peak_rss_mib']:.2f}x | "
                 f"{fmt(de, 1) if de is not None else ('n/a (scvi-tools capped)' if capped else '—')} |")
    L.append("\nHeld-out ELBO is the mean over validation cells of reconstruction loss + "
             "KL(z) (scvi-tools' `elbo_validation`; lower is better). The two trainers draw "
             "their own 10% validation split and initial weights, so equal quality shows as "
             "a difference of a few units at most, not zero. cells per CPU-s divides by "
             "the CPU time of all threads (scvi-tools: of the train() call; atlasvi: of the "
             "whole process, file reading and model writing included), so it is less "
             "sensitive than cells/s to other load on a shared machine.\n")
    if steps_prof:
        L.append("## Per-step profile (atlasvi, `build-*/benchmarks/step_bench`)\n")
        sp = steps_prof
        L.append(f"One training step of the default model on {sp['batch']} simulated cells "
                 f"({sp['nnz_per_cell']:.0f} non-zeros per cell), {sp['threads']} threads, "
                 f"median of {sp['reps']} steps: **{sp['step_ms']:.2f} ms per step = "
                 f"{fmt(sp['cells_per_s'])} cells/s** (compute only, no file I/O).\n")
        L.append("| phase | ms per step | share |")
        L.append("| --- | --- | --- |")
        for k, v in sp["phases"].items():
            L.append(f"| {k} | {v:.3f} | {100 * v / sp['step_ms']:.0f}% |")
        L.append("")
        L.append("| op (forward+backward) | ms per step | share |")
        L.append("| --- | --- | --- |")
        for k, v in sorted(sp["ops"].items(), key=lambda kv: -kv[1]):
            L.append(f"| {k} | {v:.3f} | {100 * v / sp['step_ms']:.0f}% |")
        L.append("")
        L.append("### Roofline-style estimate\n")
        L.append(f"GEMM FLOPs of the default model (2000 genes): {sp['flops_dense_per_cell'] / 1e6:.2f} "
                 f"MFLOP per cell as dense GEMMs (forward + backward; {sp['flops_sparse_per_cell'] / 1e6:.2f} "
                 f"MFLOP with the sparse first layer as atlasvi runs it). Measured single-call "
                 f"sgemm rate here (128 x 2000 x 128, {sp['threads']} threads): "
                 f"{sp['gemm_gflops']:.0f} GFLOP/s. GEMM floor: "
                 f"{sp['floor_ms']:.2f} ms per step = {fmt(sp['floor_cells_per_s'])} cells/s; "
                 f"measured step / floor = {sp['step_ms'] / sp['floor_ms']:.1f}x.\n")
    for p in plots:
        L.append(f"![{p}]({os.path.relpath(p, os.path.dirname(path))})\n")
    scaling = kept_sections(path)  # carried over before the notes, where scaling.py puts it
    if scaling:
        L.append(scaling)
    notes = os.path.join(ROOT, "benchmarks", "notes.md")
    if os.path.exists(notes):
        L.append(open(notes).read())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(L).rstrip() + "\n")


PLOT_SCRIPT = r"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
res = json.load(open(sys.argv[1])); out = sys.argv[2]
tags = [t for t in res if res[t].get("atlasvi") and res[t].get("scvi")]
fig, ax = plt.subplots(figsize=(6, 3.5))
x = range(len(tags))
ax.bar([i - 0.2 for i in x], [res[t]["atlasvi"]["cells_per_s"] for t in tags], 0.4, label="atlasvi")
ax.bar([i + 0.2 for i in x], [res[t]["scvi"]["cells_per_s"] for t in tags], 0.4, label="scvi-tools")
ax.set_xticks(list(x)); ax.set_xticklabels(tags); ax.set_ylabel("training cells/s")
ax.set_title("scVI training throughput, CPU, same threads"); ax.legend()
fig.tight_layout(); fig.savefig(out, dpi=100)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10k,100k")
    ap.add_argument("--epochs", default="", help="per size, e.g. 10k=5,100k=1")
    ap.add_argument("--scvi-steps", default="", help="scvi-tools steps per epoch cap, e.g. 1m=300")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-perf"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--python", default="")
    ap.add_argument("--skip-scvi", action="store_true")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--keep", action="store_true",
                    help="keep WORK/results.json entries of sizes not run this time")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the report from WORK/results.json (after editing notes.md)")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    if args.report_only:
        r = json.load(open(os.path.join(args.work, "results.json")))
        png = os.path.join(os.path.dirname(args.out), "benchmarks_throughput.png")
        write_report(args.out, r["results"], r["meta"], r["step"],
                     [png] if os.path.exists(png) else [])
        return
    epochs = dict(DEFAULT_EPOCHS)
    epochs.update({k: int(v) for k, v in (kv.split("=") for kv in args.epochs.split(",") if kv)})
    capsteps = dict(DEFAULT_SCVI_STEPS)
    capsteps.update({k: int(v) for k, v in (kv.split("=") for kv in args.scvi_steps.split(",") if kv)})

    if not args.no_build:
        run(["cmake", "-S", ROOT, "-B", args.build, "-DCMAKE_BUILD_TYPE=Release"])
        run(["cmake", "--build", args.build, "-j2", "--target", "atlasvi"])
        sb = os.path.join(ROOT, "benchmarks", "build_step_bench.sh")
        run(["sh", sb, args.build])
    exe = os.path.join(args.build, "atlasvi")

    py = None if args.skip_scvi else find_python(args, args.work)
    res, meta = {}, {"argv": " ".join(sys.argv[1:]), "threads": args.threads,
                     "date": time.strftime("%Y-%m-%d %H:%M")}
    cpu = open("/proc/cpuinfo").read()
    m = re.search(r"model name\s*:\s*(.*)", cpu)
    meta["cpu"] = m.group(1) if m else "?"
    meta["cores"] = os.cpu_count()
    for tag in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        n = SIZES[tag]
        data = os.path.join(args.work, f"sim_{tag}.h5ad")
        if not os.path.exists(data):
            run([exe, "simulate", data + ".tmp", "--n-cells", str(n), "--n-genes", "2000",
                 "--n-batches", "4", "--n-cell-types", "10", "--seed", "0"])
            os.replace(data + ".tmp", data)
        res[tag] = {"atlasvi": bench_atlasvi(exe, data, epochs[tag], args.threads, args.work, tag)}
        log(tag, "atlasvi", json.dumps(res[tag]["atlasvi"]))
        if py:
            s = bench_scvi(py, data, epochs[tag], args.threads, capsteps.get(tag, 0))
            meta["scvi_version"], meta["torch_version"] = s["version"], s["torch"]
            res[tag]["scvi"] = s
            log(tag, "scvi-tools", json.dumps(s))
    prof = step_bench(args.build, args.threads, args.work)
    # sizes not run this time keep their previous results (see --keep)
    rpath = os.path.join(args.work, "results.json")
    if args.keep and os.path.exists(rpath):
        old = json.load(open(rpath))
        merged = {k: v for k, v in old.get("results", {}).items() if k not in res}
        merged.update(res)
        res = {k: merged[k] for k in SIZES if k in merged}
        for k in ("scvi_version", "torch_version"):
            meta.setdefault(k, old.get("meta", {}).get(k))
    with open(rpath, "w") as f:
        json.dump({"meta": meta, "results": res, "step": prof}, f, indent=1)
    plots = []
    if py:
        png = os.path.join(os.path.dirname(args.out), "benchmarks_throughput.png")
        script = os.path.join(args.work, "plot.py")
        open(script, "w").write(PLOT_SCRIPT)
        rj = os.path.join(args.work, "res_only.json")
        json.dump(res, open(rj, "w"))
        if subprocess.run([py, script, rj, png]).returncode == 0:
            plots.append(png)
    write_report(args.out, res, meta, prof, plots)
    log("wrote", args.out)


if __name__ == "__main__":
    main()
