#!/usr/bin/env python3
"""atlasvi vs scvi-tools: one command that builds, simulates, trains both and writes
docs/benchmarks.md (tables, and PNG plots when matplotlib imports).

    python3 benchmarks/run.py                  # 10k, 100k and 1M cells: the whole report
    python3 benchmarks/run.py --sizes 10k --epochs 10k=2 --loss-epochs 5 --skip-scaling \\
        --out /tmp/check.md                    # a quick check of the generator

What one run does, in this order (it prints an estimate of the total time first):
  1. builds atlasvi, benchmarks/step_bench and benchmarks/read_bench (--build);
  2. simulates each dataset once (`atlasvi simulate`: 2000 genes, 4 batches, 10 cell types,
     seed 0, gzip as the simulator writes by default) into the work directory and reuses
     it in later runs (also an uncompressed copy for --read-uncompressed sizes);
  3. per size: `atlasvi train` and scvi-tools (benchmarks/scvi_tools_train.py) with default
     scVI, batch 128, train size 0.9, the same epochs and threads and the same validation
     cells (atlasvi's split, benchmarks/fidelity_train.py atlasvi_split), validation once
     after the last epoch; where scvi-tools is too slow (1M: DEFAULT_SCVI_STEPS) it trains
     a fixed number of steps per epoch, timed, and the report says so;
  4. per size: shard read throughput (benchmarks/read_bench.c: the trainer's own reader,
     each rank its nnz-balanced shard, on 1, 2, 4 ranks) against plain sequential reads of
     the same file, cold (evicted from the page cache with posix_fadvise) and warm;
  5. the per-step profile (step_bench) and GEMM rates (OpenBLAS in step_bench,
     torch.matmul in benchmarks/torch_gemm.py) for the roofline-style floor;
  6. loss curves of both tools on the 10k set (benchmarks/loss_curves.py: validation every
     epoch on the same cells) -> docs/benchmarks_loss.png;
  7. scaling over MPI ranks (benchmarks/scaling.py, its section and
     docs/benchmarks_scaling.png);
and writes the report with cells/s against dataset size (docs/benchmarks_throughput.png).

cells/s = training cells x epochs / seconds of the training call (file reading and setup
excluded, validation at the end included, for both). Peak RSS is the whole process
(/usr/bin/time -v).

The harness itself needs only the standard library. scvi-tools comes from the first of
--python, a python3 that imports scvi, or a venv it creates under the work directory
(pip install scvi-tools); nothing of it is committed. The speed-up history and other
prose live in benchmarks/notes.md and are copied into the report.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, HERE)
from scaling import MPI_ARGS, mpi_prefix  # noqa: E402  (standard library only)

SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
DEFAULT_SIZES = "10k,100k,1m"
# epochs per size (both trainers); scvi-tools steps per epoch where capped (0: all)
DEFAULT_EPOCHS = {"10k": 5, "100k": 1, "1m": 1}
DEFAULT_SCVI_STEPS = {"10k": 0, "100k": 0, "1m": 300}
# Rough rates for the up-front time estimate when WORK/results.json holds no earlier run
# (2 threads on the shared 2-core development VM).
GUESS = {"atlasvi": 4000.0, "scvi": 180.0, "simulate": 2500.0, "read": 30000.0}
BATCH = 128


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


def n_train_of(n):
    """atlasvi train's training cells with the default train size 0.9 not given explicitly
    (src/train.c; scvi-tools' rule, reproduced by fidelity_train.atlasvi_split)."""
    n_train = -(-9 * n // 10)  # ceil(0.9 n)
    r = n_train % BATCH
    if r in (1, 2) and n - n_train > 0:
        n_train -= r
    return n_train


def uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def sim_path(work, tag, compression="gzip"):
    return os.path.join(work, f"sim_{tag}{'' if compression == 'gzip' else '_none'}.h5ad")


def simulate(exe, work, tag, compression="gzip"):
    """The dataset of a size, simulated once into the work directory and reused."""
    data = sim_path(work, tag, compression)
    if not os.path.exists(data):
        run([exe, "simulate", data + ".tmp", "--n-cells", str(SIZES[tag]), "--n-genes", "2000",
             "--n-batches", "4", "--n-cell-types", "10", "--seed", "0", "--compression",
             compression])
        os.replace(data + ".tmp", data)
    else:
        log("reusing", data)
    return data


def bench_atlasvi(exe, data, epochs, threads, work, tag, seed=0):
    if seed:
        tag = f"{tag}_seed{seed}"
    metrics = os.path.join(work, f"metrics_{tag}.jsonl")
    # no --train-size: the default 0.9 with scvi-tools' rule, which atlasvi_split reproduces
    cmd = [exe, "train", data, "--batch-key", "batch", "--max-epochs", str(epochs),
           "--batch-size", str(BATCH), "--seed", str(seed), "--threads", str(threads),
           "--check-val-every-n-epoch", str(epochs), "--metrics", metrics, "--no-progress",
           "--model-out", os.path.join(work, f"model_{tag}.h5")]
    out, rss, wall, cpu = timed(cmd, thread_env(threads))
    rows = [json.loads(l) for l in open(metrics) if l.strip()]
    last = rows[-1]
    n = int(re.search(r"training scVI on (\d+) cells", out).group(1))
    n_train = n_train_of(n)
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
    r["epoch_loop_seconds"] = [row["t_train"] for row in rows if "t_train" in row]
    return r


def bench_scvi(py, data, epochs, threads, steps, seed=0):
    cmd = [py, os.path.join(HERE, "scvi_tools_train.py"), data, "--epochs", str(epochs),
           "--threads", str(threads), "--batch-size", str(BATCH), "--seed", str(seed),
           "--same-split"]
    if steps:
        cmd += ["--max-steps-per-epoch", str(steps)]
    out, rss, wall, _ = timed(cmd, thread_env(threads))
    line = [l for l in out.splitlines() if l.startswith("BENCH_JSON ")][-1]
    r = json.loads(line[len("BENCH_JSON "):])
    r["peak_rss_mib"] = rss
    r["wall_s"] = wall
    return r


def elbo_seeds(exe, py, data, epochs, args, first):
    """Held-out ELBO of both trainers over seeds (seed 0 from the main run): for each seed
    both validate on the same cells (that seed's atlasvi split)."""
    seeds = [0] + [int(x) for x in args.elbo_seeds.split(",") if x.strip()]
    out = {"seeds": seeds, "atlasvi": [first["atlasvi"]["elbo_validation"]],
           "atlasvi_cells_per_s": [first["atlasvi"]["cells_per_s"]]}
    if first.get("scvi"):
        out["scvi"] = [first["scvi"]["elbo_validation"]]
        out["scvi_cells_per_s"] = [first["scvi"]["cells_per_s"]]
    for sd in seeds[1:]:
        a = bench_atlasvi(exe, data, epochs, args.threads, args.work, "elbo", sd)
        out["atlasvi"].append(a["elbo_validation"])
        out["atlasvi_cells_per_s"].append(a["cells_per_s"])
        log("seed", sd, "atlasvi", a["elbo_validation"], f"{a['cells_per_s']:.0f} cells/s")
        if py and "scvi" in out:
            x = bench_scvi(py, data, epochs, args.threads, 0, sd)
            out["scvi"].append(x["elbo_validation"])
            out["scvi_cells_per_s"].append(x["cells_per_s"])
            log("seed", sd, "scvi-tools", x["elbo_validation"], f"{x['cells_per_s']:.0f} cells/s")
    return out


def step_bench(exe_dir, threads):
    """The per-op step profile (benchmarks/step_bench.c) when it was built."""
    exe = os.path.join(exe_dir, "step_bench")
    if not os.path.exists(exe):
        log("no", exe, "(sh benchmarks/build_step_bench.sh BUILD): no step profile")
        return None
    env = thread_env(threads)
    env.setdefault("OMP_WAIT_POLICY", "passive")  # as atlasvi itself (src/main.c)
    out = run([exe, "--threads", str(threads), "--reps", "100", "--json"], env=env)
    line = [l for l in out.splitlines() if l.startswith("STEP_JSON ")][-1]
    return json.loads(line[len("STEP_JSON "):])


def torch_gemm(py, threads):
    """torch.matmul GFLOP/s (benchmarks/torch_gemm.py), or None without torch."""
    if not py:
        return None
    try:
        out = run([py, os.path.join(HERE, "torch_gemm.py"), "--threads", str(threads)],
                  env=thread_env(threads))
    except SystemExit as e:
        log("torch GEMM rate not measured:", e)
        return None
    line = [l for l in out.splitlines() if l.startswith("GEMM_JSON ")][-1]
    return json.loads(line[len("GEMM_JSON "):])


# ---------------------------------------------------------------- reading


def evict(path):
    """Drops path from the page cache: fsync first (DONTNEED leaves dirty pages of a freshly
    written file in place), then posix_fadvise DONTNEED (unprivileged); returns the bytes
    still resident afterwards when `fincore` can tell, else None."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if shutil.which("fincore"):
        p = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", path],
                           capture_output=True, text=True)
        if p.returncode == 0 and p.stdout.strip().isdigit():
            return int(p.stdout.strip())
    return None


def raw_read(path, cold, repeats):
    """Plain sequential read of the whole file (16 MiB reads into one buffer): best of
    repeats; cold evicts the file before each read."""
    best, resident = None, None
    buf = bytearray(16 << 20)
    mv = memoryview(buf)
    for _ in range(repeats):
        if cold:
            resident = evict(path)
        fd = os.open(path, os.O_RDONLY)
        n, t0 = 0, time.perf_counter()
        while True:
            k = os.readv(fd, [mv])
            if not k:
                break
            n += k
        dt = time.perf_counter() - t0
        os.close(fd)
        if best is None or dt < best[1]:
            best = (n, dt)
    r = {"bytes": best[0], "seconds": best[1], "mb_per_s": best[0] / best[1] / 1e6}
    if cold:
        r["resident_after_evict"] = resident
    return r


def read_bench(exe_dir, path, ranks, cold, repeats, mpi_args, threads):
    exe = os.path.join(exe_dir, "read_bench")
    env = thread_env(threads)
    cmd = mpi_prefix(ranks, mpi_args) + [exe, path, "--repeats", str(repeats)]
    if cold:
        cmd.append("--evict")
    out = run(cmd, env=env)
    line = [l for l in out.splitlines() if l.startswith("READ_JSON ")][-1]
    r = json.loads(line[len("READ_JSON "):])
    r["threads"] = threads
    return r


def bench_reads(exe_dir, path, ranks_list, mpi_args, threads):
    """atlasvi's shard reader on 1..N ranks against plain reads of the same file, cold
    and warm. Small files get 5 repeats (best kept), files over 256 MB one."""
    size = os.path.getsize(path)
    reps = 5 if size < 256e6 else 1
    res = {"file": os.path.basename(path), "file_bytes": size, "repeats": reps,
           "raw": {"cold": raw_read(path, True, reps), "warm": raw_read(path, False, reps)},
           "atlasvi": []}
    for n in ranks_list:
        for cold in (True, False):
            # the trainer's threads shared by the ranks (gzip chunks inflate on them)
            r = read_bench(exe_dir, path, n, cold, reps, mpi_args, max(1, threads // n))
            log(f"read {os.path.basename(path)} {n} rank(s) {'cold' if cold else 'warm'}: "
                f"{r['seconds']:.3f} s, {r['payload_bytes'] / r['seconds'] / 1e6:.0f} MB/s payload")
            res["atlasvi"].append(r)
    return res


# ---------------------------------------------------------------- loss curves, scaling


def loss_curves(py, exe, data, epochs, threads, work, png):
    cmd = [py, os.path.join(HERE, "loss_curves.py"), exe, data, "--epochs", str(epochs),
           "--threads", str(threads), "--work", os.path.join(work, "loss"), "--png", png]
    out = run(cmd, env=thread_env(threads))
    line = [l for l in out.splitlines() if l.startswith("LOSS_JSON ")][-1]
    return json.loads(line[len("LOSS_JSON "):])


def run_scaling(args):
    cmd = [sys.executable, os.path.join(HERE, "scaling.py"), "--no-build", "--build",
           args.build, "--work", os.path.join(args.work, "scaling"), "--out", args.out]
    cmd += shlex.split(args.scaling_args)
    run(cmd, capture=False)


# ---------------------------------------------------------------- estimate


def estimate(args, tags, epochs, capsteps, py):
    """Seconds the run will take, from the rates of the last run in WORK/results.json (or
    GUESS), with one line per part."""
    rates, src = dict(GUESS), "built-in guesses for a shared 2-core machine"
    rpath = os.path.join(args.work, "results.json")
    if os.path.exists(rpath):
        try:
            old = json.load(open(rpath)).get("results", {})
            av = [r["atlasvi"]["cells_per_s"] for r in old.values() if r.get("atlasvi")]
            sc = [r["scvi"]["cells_per_s"] for r in old.values() if r.get("scvi")]
            if av:
                rates["atlasvi"] = min(av)
            if sc:
                rates["scvi"] = min(sc)
            if av or sc:
                src = f"the rates of the last run in {rpath}"
        except (ValueError, KeyError, TypeError):
            pass
    parts = []
    for tag in tags:
        n = SIZES[tag]
        nt = n_train_of(n)
        nsim = [c for c in ("gzip", "none") if c == "gzip" or tag in args.read_uncompressed]
        sim = sum(n / rates["simulate"] for c in nsim if not os.path.exists(sim_path(args.work, tag, c)))
        if sim:
            parts.append((f"simulate {tag} (once, then reused)", sim))
        parts.append((f"atlasvi {tag}, {epochs[tag]} epoch(s)",
                      nt * epochs[tag] / rates["atlasvi"] + n / 1e5 + 5))
        if py:
            st = capsteps.get(tag, 0)
            cells = (min(st * BATCH, nt) if st else nt) * epochs[tag]
            val = min(st * BATCH, n - nt) if st else n - nt
            parts.append((f"scvi-tools {tag}, {epochs[tag]} epoch(s)"
                          + (f" of {st} steps" if st else ""),
                          cells / rates["scvi"] + val / (3 * rates["scvi"]) + 30 + n / 2e4))
        if not args.skip_read:
            nr = len(args.read_ranks)
            reps = 5 if n < 300_000 else 1
            t = 2 * nr * (reps * n / rates["read"] + 2)
            if tag in args.read_uncompressed:
                t *= 2
            parts.append((f"read throughput {tag}", t))
        extra = [x for x in args.elbo_seeds.split(",") if x.strip()]
        if tag == args.elbo_size and extra:
            one = nt * epochs[tag] / rates["atlasvi"] + n / 1e5 + 5
            if py:
                one += nt * epochs[tag] / rates["scvi"] + 30 + n / 2e4
            parts.append((f"held-out ELBO {tag}, {len(extra)} more seed(s)", len(extra) * one))
    parts.append(("step profile and GEMM rates", 30))
    if py and args.loss_epochs:
        ln = SIZES[args.loss_size]
        lt = n_train_of(ln) * args.loss_epochs
        lv = (ln - n_train_of(ln)) * args.loss_epochs
        parts.append((f"loss curves {args.loss_size}, {args.loss_epochs} epochs",
                      lt / rates["atlasvi"] + lt / rates["scvi"] + lv / (3 * rates["scvi"]) + 60))
    if not args.skip_scaling:
        sa = argparse.ArgumentParser(add_help=False)
        sa.add_argument("--ranks", default="1,2,4")
        sa.add_argument("--steps", type=int, default=150)
        sa.add_argument("--repeats", type=int, default=3)
        k, _ = sa.parse_known_args(shlex.split(args.scaling_args))
        nr = len([x for x in k.ranks.split(",") if x])
        # strong + weak, each rank count, repeats; ~60 ms a step on 2 busy cores, ~4 s launch
        parts.append(("scaling over ranks (scaling.py)", 2 * nr * k.repeats * (k.steps * 0.06 + 4)
                      + 40))
    return sum(t for _, t in parts), parts, rates, src


# ---------------------------------------------------------------- report


def fmt(x, d=0):
    if x is None:
        return "—"
    return f"{x:,.{d}f}"


def cpu_rate(x):
    c = x.get("cpu_seconds_train")
    return x["cells_trained"] / c if c else None


def mins(s):
    return f"{s / 60:.0f} min" if s >= 90 else f"{s:.0f} s"


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


def is_capped(x):
    if x.get("impl") == "atlasvi":
        return False
    full = -(-n_train_of(x["n_cells"]) // BATCH)
    st = x.get("max_steps_per_epoch") or 0
    return bool(st and st < full)


def loop_rate(x):
    """cells/s of the training loops alone (first to last minibatch of each epoch)."""
    lp = x.get("epoch_loop_seconds")
    return x["cells_trained"] / sum(lp) if lp and sum(lp) > 0 else None


def throughput_section(L, res, meta):
    L.append("## Throughput and held-out ELBO\n")
    L.append("| cells | trainer | epochs | steps/epoch | cells/s | training-loop cells/s | s/epoch | "
             "cells per CPU-s | peak RSS MiB | held-out ELBO | train ELBO |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    capped_notes = []
    for tag, r in res.items():
        for impl in ("atlasvi", "scvi"):
            x = r.get(impl)
            if not x:
                continue
            full_steps = -(-n_train_of(x["n_cells"]) // BATCH)
            st = x.get("max_steps_per_epoch") or 0
            name = x["impl"]
            if is_capped(x):
                steps = f"**{st} of {full_steps} (fixed number of steps, timed)**"
                name += f" (**{st} steps only**)"
                capped_notes.append((tag, st, full_steps, x))
                spe = x["seconds_train"] / x["epochs"]
                spe_s = f"{fmt(spe, 1)} for {st} steps"
                ev = f"n/a ({st} steps)"
            else:
                steps = str(full_steps)
                spe_s = fmt(x["seconds_train"] / x["epochs"], 1)
                ev = fmt(x["elbo_validation"], 1)
            L.append(f"| {tag} | {name} | {x['epochs']} | {steps} | "
                     f"{fmt(x['cells_per_s'])} | {fmt(loop_rate(x)) if loop_rate(x) else '—'} | "
                     f"{spe_s} | {fmt(cpu_rate(x))} | "
                     f"{fmt(x['peak_rss_mib'])} | {ev} | {fmt(x['elbo_train'], 1)} |")
    L.append("")
    for tag, st, full, x in capped_notes:
        est = full * BATCH / x["cells_per_s"] if x["cells_per_s"] else None
        L.append(f"**{tag}: scvi-tools was too slow for whole epochs here, so it trained a fixed "
                 f"{st} of {full} steps per epoch** (Lightning `limit_train_batches`, and "
                 f"`limit_val_batches` the same), timed like the full runs; its cells/s counts "
                 f"only the {st * BATCH:,} cells of those steps per epoch and includes the "
                 "fixed start-up of train() (data splitter over all cells, Lightning set-up, "
                 "sanity validation) that so few steps do not amortize, so it is an "
                 "underestimate. A whole epoch at that rate would take about "
                 f"{mins(est) if est else '—'}. Its ELBO after {st} steps is not comparable "
                 "and is left out of the ratios.\n")
    L.append("## atlasvi / scvi-tools\n")
    L.append("| cells | cells/s ratio | training-loop cells/s ratio | s/epoch ratio (scvi-tools / "
             "atlasvi) | cells per CPU-s ratio | peak RSS ratio | held-out ELBO atlasvi − "
             "scvi-tools |")
    L.append("| --- | --- | --- | --- | --- | --- | --- |")
    for tag, r in res.items():
        a, s = r.get("atlasvi"), r.get("scvi")
        if not (a and s):
            continue
        capped = is_capped(s)
        de = None
        if a["elbo_validation"] is not None and s["elbo_validation"] is not None and not capped:
            de = a["elbo_validation"] - s["elbo_validation"]
        cr = (f"{cpu_rate(a) / cpu_rate(s):.2f}x" if cpu_rate(a) and cpu_rate(s) else "—")
        ratio = a["cells_per_s"] / s["cells_per_s"]
        mark = " (scvi-tools: fixed steps)" if capped else ""
        spe = "n/a (scvi-tools: fixed steps)" if capped else (
            f"{(s['seconds_train'] / s['epochs']) / (a['seconds_train'] / a['epochs']):.2f}x")
        lr = (f"{loop_rate(a) / loop_rate(s):.2f}x" if loop_rate(a) and loop_rate(s) else "—")
        L.append(f"| {tag} | {ratio:.2f}x{mark} | {lr} | {spe} | {cr} | "
                 f"{a['peak_rss_mib'] / s['peak_rss_mib']:.2f}x | "
                 f"{fmt(de, 1) if de is not None else ('n/a (scvi-tools: fixed steps)' if capped else '—')} |")
    same = all(r["scvi"].get("same_split") for r in res.values() if r.get("scvi"))
    split = ("Both trainers validate on the same 10% of the cells (atlasvi's split, recomputed "
             "by `benchmarks/fidelity_train.py` atlasvi_split and given to scvi-tools as "
             "`external_indexing`), each with its own initial weights and minibatch order, so "
             "equal quality shows as a difference of a few units at most, not zero."
             if same else
             "The two trainers draw their own 10% validation split and initial weights, so "
             "equal quality shows as a difference of a few units at most, not zero.")
    L.append("\nHeld-out ELBO is the mean over validation cells of reconstruction loss + "
             "KL(z) (scvi-tools' `elbo_validation`; lower is better), after the last epoch. "
             + split + " cells/s divides the training cells by the seconds of the whole "
             "training call (scvi-tools' train(): its data splitter, Lightning set-up and sanity "
             "check included; atlasvi's training epochs and validation); *training-loop* "
             "cells/s counts only each epoch's first to last minibatch (a Lightning callback "
             "in scvi-tools, the per-epoch t_train of atlasvi's metrics), the steady rate "
             "without either tool's start-up. cells per CPU-s divides by the CPU time of all threads (scvi-tools: "
             "of the train() call; atlasvi: of the whole process, file reading and model "
             "writing included), so it is less sensitive than cells/s to other load on a "
             "shared machine.\n")


def mean_sd(v):
    m = sum(v) / len(v)
    sd = (sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0
    return m, sd


def seeds_section(L, res):
    for tag, r in res.items():
        sd = r.get("seeds")
        if not sd or len(sd["seeds"]) < 2:
            continue
        ep = r["atlasvi"]["epochs"]
        L.append(f"### Held-out ELBO over seeds ({tag}, {ep} epochs)\n")
        L.append("Both trainers again with other seeds (`--elbo-seeds`); for each seed both "
                 "validate on the same cells (that seed's atlasvi split), each with its own "
                 "initial weights and minibatch order. Equal quality means the difference of "
                 "the means is within the seed-to-seed spread.\n")
        L.append("| trainer | seeds | held-out ELBO per seed | mean ± sd | cells/s per seed |")
        L.append("| --- | --- | --- | --- | --- |")
        means = {}
        for impl, name in (("atlasvi", "atlasvi"), ("scvi", "scvi-tools")):
            v = sd.get(impl)
            if not v:
                continue
            m, s_ = mean_sd(v)
            means[impl] = (m, s_)
            L.append(f"| {name} | {', '.join(map(str, sd['seeds']))} | "
                     f"{', '.join(fmt(x, 1) for x in v)} | {m:.1f} ± {s_:.1f} | "
                     f"{', '.join(fmt(x) for x in sd[impl + '_cells_per_s'])} |")
        if len(means) == 2:
            (ma, sa), (ms, ss) = means["atlasvi"], means["scvi"]
            spread = max(max(sd["atlasvi"]) - min(sd["atlasvi"]),
                         max(sd["scvi"]) - min(sd["scvi"]))
            verdict = "within" if abs(ma - ms) <= spread else "OUTSIDE"
            med = lambda v: sorted(v)[len(v) // 2]
            ra = med(sd["atlasvi_cells_per_s"]) / med(sd["scvi_cells_per_s"])
            L.append(f"\nDifference of the means (atlasvi − scvi-tools): {ma - ms:+.1f} "
                     f"({(ma - ms) / ms:+.2%}); largest seed range of either trainer: "
                     f"{spread:.1f}: **{verdict} the seed-to-seed spread**. Median cells/s "
                     f"over the seeds: atlasvi / scvi-tools = **{ra:.2f}x** (three short runs "
                     "each, less at the mercy of one slow minute than the single row above).\n")


def loss_section(L, lc, png, out_path):
    L.append("## Loss curves\n")
    a, s = lc["atlasvi"], lc["scvi"]
    L.append(f"Both tools on the {lc['n_cells']:,}-cell set, {lc['epochs']} epochs, validation "
             f"after every epoch on the same {lc['n_val']:,} cells ({lc['n_train']:,} training "
             f"cells; `benchmarks/loss_curves.py`), default scVI, batch 128, seed 0, "
             f"{lc['threads']} threads. Values are -ELBO per cell (lower is better); the KL "
             "warm-up runs over 400 epochs in both, so these are early-training curves.\n")
    if png:
        L.append(f"![loss curves]({os.path.relpath(png, os.path.dirname(out_path))})\n")
    L.append("| trainer | epochs | final train ELBO | final held-out ELBO | held-out reconstruction "
             "| held-out KL | best held-out ELBO (epoch) | training s |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for x in (a, s):
        c = x["curves"]
        v = [(i + 1, y) for i, y in enumerate(c["elbo_validation"]) if y is not None]
        best = min(v, key=lambda t: t[1]) if v else None
        L.append(f"| {x['tool']} | {x['epochs']} | {fmt(c['elbo_train'][-1], 1)} | "
                 f"{fmt(c['elbo_validation'][-1], 1)} | "
                 f"{fmt(c['reconstruction_loss_validation'][-1], 1)} | "
                 f"{fmt(c['kl_local_validation'][-1], 2)} | "
                 f"{fmt(best[1], 1) + f' ({best[0]})' if best else '—'} | "
                 f"{fmt(x['seconds_train'], 1)} |")
    ck = lc["split_check"]
    L.append(f"\nSame validation cells, checked: atlasvi's final weights loaded into scvi-tools "
             f"give an analytic KL of {ck['kl_validation_recomputed']:.4f} on the recomputed "
             f"validation cells against atlasvi's own kl_local_validation "
             f"{ck['kl_validation_atlasvi']:.4f} ({'match' if ck['ok'] else '**MISMATCH**'}).\n")


def roofline_section(L, sp, tg, res):
    L.append("### Roofline-style estimate\n")
    fl = sp["flops_dense_per_cell"]
    L.append(f"GEMM FLOPs of the default model (2000 genes): {fl / 1e6:.2f} MFLOP per cell as "
             f"dense GEMMs (forward + backward; {sp['flops_sparse_per_cell'] / 1e6:.2f} MFLOP "
             "with the sparse first layer as atlasvi runs it), "
             f"{fl * sp['batch'] / 1e9:.2f} GFLOP per {sp['batch']}-cell step. The floor is "
             "that work at a measured GEMM rate (no other op, no memory traffic): floor "
             "ms/step = FLOPs per step / rate. Rates measured in this run, "
             f"{sp['threads']} threads:\n")
    a_rates = [r["atlasvi"]["cells_per_s"] for r in res.values() if r.get("atlasvi")]
    a_best = max(a_rates) if a_rates else None
    L.append("| GEMM rate | GFLOP/s | floor ms/step | floor cells/s | step_bench step / floor | "
             "atlasvi training cells/s (best size) / floor cells/s |")
    L.append("| --- | --- | --- | --- | --- | --- |")
    rows = [(f"OpenBLAS sgemm at the model's shape ({sp['batch']} x 2000 x 128, rows split over "
             "threads; step_bench)", sp.get("gemm_gflops"))]
    if sp.get("av_sgemm_gflops"):
        rows.append((f"av_sgemm (atlasvi's GEMM, src/gemm.c) at the model's shape, "
                     f"{sp['threads']} threads, median of calls between the timed steps "
                     "(step_bench: the same minutes as the step)", sp["av_sgemm_gflops"]))
    if sp.get("gemm_peak_gflops"):
        n = sp.get("gemm_peak_n", 1024)
        rows.append((f"OpenBLAS sgemm {n}^3, {sp['threads']} OpenBLAS threads (square: about the "
                     "machine's peak float32 GEMM rate; step_bench)", sp["gemm_peak_gflops"]))
    if tg:
        rows.append((f"torch.matmul 1024^3 (torch {tg['torch']}, {tg['threads']} threads)",
                     tg.get("square_1024")))
        rows.append(("torch.matmul at the model's shape (128 x 128 @ 128 x 2000)",
                     tg.get("model_128x128x2000")))
    rows = [(name, g) for name, g in rows if g]
    top = max(g for _, g in rows) if rows else None
    rows = [(f"**{name}: highest GEMM rate measured**" if g == top else name, g)
            for name, g in rows]
    if sp.get("fma_peak_gflops"):
        rows.append((f"FMA peak: {sp['threads']} threads of independent vector FMA chains on "
                     "registers (the arithmetic ceiling, not reachable by any GEMM)",
                     sp["fma_peak_gflops"]))
    for name, g in rows:
        floor_ms = fl * sp["batch"] / (g * 1e9) * 1e3
        floor_cps = sp["batch"] / floor_ms * 1e3
        tr = f"{a_best / floor_cps:.0%}" if a_best else "—"
        L.append(f"| {name} | {g:.1f} | {floor_ms:.2f} | {fmt(floor_cps)} | "
                 f"{sp['step_ms'] / floor_ms:.1f}x | {tr} |")
    tr_best = f"; the best end-to-end training rate above is {fmt(a_best)} cells/s" if a_best else ""
    L.append(f"\nstep_bench's step: {sp['step_ms']:.2f} ms ({fmt(sp['cells_per_s'])} cells/s, "
             f"compute only){tr_best}. The highest GEMM rate gives the lowest GEMM floor, the one "
             "to compare with; the FMA-peak row is the bound no code can beat. This machine's "
             "speed drifts by up to 1.5x within minutes, so the av_sgemm row, sampled between "
             "the timed steps, is the like-for-like one for step/floor; the other rates are "
             "best-of samples taken after the steps. A step/floor of 1.0x would mean every millisecond goes to GEMMs at "
             "that rate; the rest is the ZINB likelihood, the sparse first layer, softmax, "
             "batch norm, Adam and gradient zeroing (per-op table above), and the model's thin "
             "GEMMs (128 rows) run below the square-GEMM rate.\n")


def read_section(L, res):
    rows = [(tag, r["read"]) for tag, r in res.items() if r.get("read")]
    rows += [(tag, r["read_none"]) for tag, r in res.items() if r.get("read_none")]
    if not rows:
        return
    L.append("## Data reading: shard read throughput against the raw disk rate\n")
    L.append("`benchmarks/read_bench.c` does what `atlasvi train` does before training "
             "(src/app_setup.c): rank 0 reads the row pointer and plans shards balanced by "
             "non-zeros, then every rank opens the file and reads its own cells with "
             "`av_input_read_rows` (count checks excluded); time = the slowest rank, barrier "
             "to barrier. Each rank runs the trainer's threads divided by the ranks (at least "
             "one): gzip chunks are read raw and inflated on a rank's OpenMP threads "
             "(io/h5util.c), so 1 rank with 2 threads inflates on both cores. *Raw* is a plain sequential read of the whole file (16 MiB `read`s, "
             "one process). *Cold*: the file was evicted from the page cache first "
             "(`posix_fadvise(POSIX_FADV_DONTNEED)`; the VM's host may still cache the disk, "
             "so cold is cold for this kernel, not necessarily for the physical disk); "
             "*warm*: read again right after. *Payload* = the CSR as stored uncompressed "
             "(non-zeros x 8 bytes + row pointer); *stored* = the bytes X/data, X/indices and "
             "X/indptr take in the file (gzip level 1, as `atlasvi simulate` writes by "
             "default; *none* rows are an uncompressed copy). Best of the repeats shown.\n")
    L.append("| cells | file | compression | ranks | cache | atlasvi read s | payload MB/s | "
             "stored MB/s | raw read of the file MB/s | atlasvi / raw (stored bytes) | "
             "cells/s read | x training cells/s |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for tag, rd in rows:
        train = res[tag].get("atlasvi", {}).get("cells_per_s")
        for x in rd["atlasvi"]:
            cache = "cold" if x["cold"] else "warm"
            raw = rd["raw"][cache]["mb_per_s"]
            stored = x["x_stored_bytes"] / x["seconds"] / 1e6
            cps = x["n_cells"] / x["seconds"]
            L.append(f"| {tag} | {rd['file']} ({rd['file_bytes'] / 1e6:.0f} MB) | {x['filters']} | "
                     f"{x['ranks']}{' x ' + str(x['threads']) + ' threads' if x.get('threads') else ''} | "
                     f"{cache} | {x['seconds']:.3f} | "
                     f"{x['payload_bytes'] / x['seconds'] / 1e6:,.0f} | {stored:,.0f} | "
                     f"{raw:,.0f} | {stored / raw:.1%} | {fmt(cps)} | "
                     f"{f'{cps / train:.0f}x' if train else '—'} |")
    L.append("")
    # the verdict: worst case (cold, any rank count) against training of the same file
    worst = []
    for tag, rd in rows:
        train = res[tag].get("atlasvi", {}).get("cells_per_s")
        if not train:
            continue
        for x in rd["atlasvi"]:
            worst.append((x["n_cells"] / x["seconds"] / train, tag, x))
    if worst:
        f, tag, x = min(worst, key=lambda t: t[0])
        small = [(rd["file"], rd["file_bytes"]) for _, rd in rows if rd["file_bytes"] < 2e8]
        ev = [(rd["file"], rd["raw"]["cold"].get("resident_after_evict")) for _, rd in rows]
        ev = [(f_, e) for f_, e in ev if e is not None]
        evs = ""
        if ev and not any(e for _, e in ev):
            evs = "; `fincore` found none of the file resident after each eviction"
        elif ev:
            evs = ("; after eviction `fincore` still found " +
                   ", ".join(f"{e / 1e6:.1f} MB of {f_}" for f_, e in ev if e) +
                   " resident (those cold rows are partly warm)")
        # what gzip costs: 1 rank, warm, payload MB/s of the gzip file vs its uncompressed copy
        gz = ""
        for t, r in res.items():
            if not (r.get("read") and r.get("read_none")):
                continue
            pick = lambda rd, c: next((y for y in rd["atlasvi"] if y["ranks"] == 1 and
                                       y["cold"] == c), None)
            g, n_, nc = pick(r["read"], False), pick(r["read_none"], False), pick(r["read_none"], True)
            if not (g and n_ and nc):
                continue
            mb = lambda y: y["payload_bytes"] / y["seconds"] / 1e6
            st = lambda y: y["x_stored_bytes"] / y["seconds"] / 1e6
            gz = (f"Where the time goes ({t}, 1 rank): the gzip file gives {mb(g):,.0f} MB/s of "
                  f"payload warm against {mb(n_):,.0f} MB/s from its uncompressed copy, so "
                  "decompression (CPU) sets the rate of the default files, not the disk; the "
                  f"uncompressed reads reach {st(nc) / r['read_none']['raw']['cold']['mb_per_s']:.0%} "
                  f"(cold) and {st(n_) / r['read_none']['raw']['warm']['mb_per_s']:.0%} (warm) of "
                  "a plain sequential read of the same file, the rest being HDF5's read path and "
                  "the copy into the trainer's arrays (also CPU, and shared with other load). ")
        verdict = (f"Reading is not the bottleneck: the slowest read here ({tag}, {x['ranks']} "
                   f"rank(s), {'cold' if x['cold'] else 'warm'}) delivers cells {f:.1f}x faster "
                   "than atlasvi trains on that file" if f >= 1 else
                   f"**Reading is slower than training** in the slowest case here ({tag}, "
                   f"{x['ranks']} rank(s), {'cold' if x['cold'] else 'warm'}): {f:.2f}x the "
                   "training rate of that file")
        L.append(verdict + " (training cells/s above, "
                 "one process), and the read happens once per run while training passes over "
                 "every cell each epoch (with `--stream` the read is repeated every epoch on a "
                 "prefetch thread, overlapped with compute: the factor is then the margin per "
                 "epoch). " + gz + (evs[2].upper() + evs[3:] + ". " if evs else "")
                 + ("Small files (" + ", ".join(f"{f_} {b / 1e6:.0f} MB" for f_, b in small)
                    + ") are read in a few seconds at most, so their MB/s carry fixed costs "
                    "(HDF5 open and the row-pointer read included, MPI launch excluded) and "
                    "scheduling noise on a loaded machine; the raw reads of such files are "
                    "noisier still (tens of milliseconds)." if small else "") + "\n")


def write_report(path, R, plots):
    res, meta, steps_prof = R["results"], R["meta"], R.get("step")
    L = []
    L.append("# Benchmarks: atlasvi vs scvi-tools (CPU)\n")
    L.append("Per CPU path (AVX-512, AVX2, generic C) side by side with scvi-tools: "
             "[benchmarks_isa.md](benchmarks_isa.md) (`benchmarks/isa_paths.py`).\n")
    L.append("Generated by `python3 benchmarks/run.py " + meta["argv"] + "` on " + meta["date"] +
             f" (atlasvi built from {meta.get('commit', '?')})"
             ". Do not edit by hand: prose lives in `benchmarks/notes.md`.\n")
    L.append(f"Machine: {meta['cpu']}, {meta['cores']} cores; {meta['threads']} threads per "
             f"trainer; scvi-tools {meta.get('scvi_version', '?')} (torch "
             f"{meta.get('torch_version', '?')}). Default scVI (128 hidden, 10 latent, 1 layer, "
             "ZINB, gene dispersion, batch norm), batch 128, train_size 0.9, 2000 genes, 4 "
             "batches, 10 cell types (`atlasvi simulate --seed 0`). The machine is shared: "
             "timings are noisy, compare ratios taken in the same run.\n")
    if meta.get("load_before"):
        L.append(f"Machine load (`uptime`) before this run: `{meta['load_before']}`; after: "
                 f"`{meta.get('load_after', '?')}`. The run took {mins(meta['elapsed_s'])} "
                 f"(estimated up front: {mins(meta['estimate_s'])}).\n")
    old = [f"{t} ({r['date']})" for t, r in res.items() if r.get("date") and
           r["date"] != meta["date"]]
    if old:
        L.append("Rows kept from earlier runs (`--keep`): " + ", ".join(old) + ".\n")
    throughput_section(L, res, meta)
    seeds_section(L, res)
    tp = [p for p in plots if p.endswith("throughput.png")]
    for p in tp:
        L.append(f"![cells/s against dataset size]({os.path.relpath(p, os.path.dirname(path))})\n")
    if R.get("loss"):
        lp = [p for p in plots if p.endswith("loss.png")]
        loss_section(L, R["loss"], lp[0] if lp else None, path)
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
        if kept_sections(path):
            L.append("The all-reduce of more ranks is measured in the scaling section below.\n")
        L.append("| op (forward+backward) | ms per step | share |")
        L.append("| --- | --- | --- |")
        for k, v in sorted(sp["ops"].items(), key=lambda kv: -kv[1]):
            L.append(f"| {k} | {v:.3f} | {100 * v / sp['step_ms']:.0f}% |")
        L.append("")
        roofline_section(L, sp, R.get("gemm_torch"), res)
    read_section(L, res)
    scaling = kept_sections(path)  # carried over before the notes, where scaling.py puts it
    if scaling:
        L.append(scaling)
    notes = os.path.join(HERE, "notes.md")
    if os.path.exists(notes):
        L.append(open(notes).read())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(L).rstrip() + "\n")


PLOT_SCRIPT = r"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
res = json.load(open(sys.argv[1])); out = sys.argv[2]
tags = [t for t in res if res[t].get("atlasvi")]
fig, ax = plt.subplots(figsize=(6.4, 3.8))
x = range(len(tags))
av = [res[t]["atlasvi"]["cells_per_s"] for t in tags]
b = ax.bar([i - 0.2 for i in x], av, 0.4, label="atlasvi", color="#4c72b0")
sc = [res[t].get("scvi") for t in tags]
for i, s in enumerate(sc):
    if not s:
        continue
    capped = s.get("capped")
    ax.bar(i + 0.2, s["cells_per_s"], 0.4, color="#dd8452", hatch="//" if capped else None,
           label="scvi-tools" if i == min(j for j, y in enumerate(sc) if y) else None)
    lab = f"{s['cells_per_s']:,.0f}"
    if capped:
        lab += f"\n({s['max_steps_per_epoch']} steps only)"
    ax.text(i + 0.2, s["cells_per_s"], lab, ha="center", va="bottom", fontsize=7)
for i, v in enumerate(av):
    ax.text(i - 0.2, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=7)
ax.set_yscale("log"); ax.set_xlim(-0.8, len(tags) - 0.2)
ax.set_ylim(top=max(av) * 2.5)
ax.set_xticks(list(x)); ax.set_xticklabels([f"{res[t]['atlasvi']['n_cells']:,} cells" for t in tags])
ax.set_xlabel("dataset size (2000 genes)"); ax.set_ylabel("training cells/s (log)")
ax.set_title("scVI training throughput, CPU, same threads", fontsize=10); ax.legend(fontsize=8)
fig.tight_layout(); fig.savefig(out, dpi=100)
"""


def make_plot(py, res, png, work):
    """docs/benchmarks_throughput.png with the first python that imports matplotlib."""
    for cand in [sys.executable] + ([py] if py else []):
        if subprocess.run([cand, "-c", "import matplotlib"], capture_output=True).returncode:
            continue
        script = os.path.join(work, "plot.py")
        open(script, "w").write(PLOT_SCRIPT)
        rj = os.path.join(work, "res_only.json")
        slim = {t: {k: dict(v, capped=is_capped(v)) for k, v in r.items()
                    if k in ("atlasvi", "scvi") and v} for t, r in res.items()}
        json.dump(slim, open(rj, "w"))
        return subprocess.run([cand, script, rj, png]).returncode == 0
    log("matplotlib is not installed (pip install matplotlib): no PNG plots, tables only")
    return False


def parse_kv(text, base):
    d = dict(base)
    d.update({k: int(v) for k, v in (kv.split("=") for kv in text.split(",") if kv)})
    return d


def main():
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=DEFAULT_SIZES)
    ap.add_argument("--epochs", default="", help="per size, e.g. 10k=5,100k=1")
    ap.add_argument("--scvi-steps", default="",
                    help="scvi-tools steps per epoch cap, e.g. 1m=300 (0: whole epochs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-perf"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build-bench"),
                    help="simulated files (kept and reused), metrics, results.json")
    ap.add_argument("--python", default="")
    ap.add_argument("--skip-scvi", action="store_true")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--loss-epochs", type=int, default=20,
                    help="epochs of the loss-curve runs (0: skip)")
    ap.add_argument("--loss-size", default="10k")
    ap.add_argument("--elbo-seeds", default="1,2",
                    help="more seeds for both trainers on --elbo-size (seed 0 is the main run): "
                         "the seed-to-seed spread of the held-out ELBO ('' for none)")
    ap.add_argument("--elbo-size", default="10k")
    ap.add_argument("--read-ranks", default="1,2,4")
    ap.add_argument("--read-uncompressed", default="10k,100k",
                    help="sizes whose reading is also measured on an uncompressed copy")
    ap.add_argument("--skip-read", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true",
                    help="keep the scaling section of the old report instead of rerunning it")
    ap.add_argument("--scaling-args", default="",
                    help="extra arguments for benchmarks/scaling.py, e.g. '--steps 60'")
    ap.add_argument("--keep", action="store_true",
                    help="keep WORK/results.json entries of sizes not run this time")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the report from WORK/results.json (after editing notes.md)")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    png_tp = os.path.join(out_dir, "benchmarks_throughput.png")
    png_loss = os.path.join(out_dir, "benchmarks_loss.png")
    rpath = os.path.join(args.work, "results.json")
    if args.report_only:
        R = json.load(open(rpath))
        plots = [p for p in (png_tp, png_loss) if os.path.exists(p)]
        write_report(args.out, R, plots)
        return
    tags = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    for t in tags + [args.loss_size]:
        if t not in SIZES:
            raise SystemExit(f"unknown size {t}: one of {', '.join(SIZES)}")
    epochs = parse_kv(args.epochs, DEFAULT_EPOCHS)
    capsteps = parse_kv(args.scvi_steps, DEFAULT_SCVI_STEPS)
    args.read_ranks = [int(x) for x in args.read_ranks.split(",") if x]
    args.read_uncompressed = [s.strip().lower() for s in args.read_uncompressed.split(",") if s]

    est, parts, rates, src = estimate(args, tags, epochs, capsteps, not args.skip_scvi)
    log(f"estimated total time: about {mins(est)} ({src}: atlasvi "
        f"{rates['atlasvi']:,.0f} cells/s, scvi-tools {rates['scvi']:,.0f} cells/s), plus "
        "the build:")
    for name, t in parts:
        log(f"    {name:<48} ~{mins(t)}")
    py = None if args.skip_scvi else find_python(args, args.work)

    if not args.no_build:
        run(["cmake", "-S", ROOT, "-B", args.build, "-DCMAKE_BUILD_TYPE=Release"])
        run(["cmake", "--build", args.build, "-j2", "--target", "atlasvi"])
        for sh in ("build_step_bench.sh", "build_read_bench.sh"):
            try:
                run(["sh", os.path.join(HERE, sh), args.build])
            except SystemExit as e:
                log(f"{sh} failed ({e}): that part of the report is left out")
    exe = os.path.join(args.build, "atlasvi")

    cpu = open("/proc/cpuinfo").read()
    m = re.search(r"model name\s*:\s*(.*)", cpu)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "io",
                            "dist", "models", "CMakeLists.txt"],
                           capture_output=True, text=True).stdout.strip()
    meta = {"argv": " ".join(sys.argv[1:]), "threads": args.threads,
            "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": m.group(1) if m else "?",
            "cores": os.cpu_count(), "estimate_s": est, "load_before": uptime(),
            "commit": commit + (" plus uncommitted changes to the sources" if dirty else "")}
    log("load before:", meta["load_before"])
    res = {}
    for tag in tags:
        data = simulate(exe, args.work, tag)
        res[tag] = {"date": meta["date"],
                    "atlasvi": bench_atlasvi(exe, data, epochs[tag], args.threads, args.work, tag)}
        log(tag, "atlasvi", json.dumps(res[tag]["atlasvi"]))
        if py:
            s = bench_scvi(py, data, epochs[tag], args.threads, capsteps.get(tag, 0))
            meta["scvi_version"], meta["torch_version"] = s["version"], s["torch"]
            res[tag]["scvi"] = s
            log(tag, "scvi-tools", json.dumps(s))
        if tag == args.elbo_size and args.elbo_seeds:
            res[tag]["seeds"] = elbo_seeds(exe, py, data, epochs[tag], args, res[tag])
    if not args.skip_read and os.path.exists(os.path.join(args.build, "read_bench")):
        for tag in tags:
            res[tag]["read"] = bench_reads(args.build, sim_path(args.work, tag),
                                           args.read_ranks, MPI_ARGS, args.threads)
            if tag in args.read_uncompressed:
                plain = simulate(exe, args.work, tag, "none")
                res[tag]["read_none"] = bench_reads(args.build, plain, args.read_ranks, MPI_ARGS,
                                                    args.threads)
    elif not args.skip_read:
        log("no read_bench in", args.build, "(sh benchmarks/build_read_bench.sh): no read section")
    prof = step_bench(args.build, args.threads)
    tg = torch_gemm(py, args.threads)
    loss = None
    if py and args.loss_epochs > 0:
        data = simulate(exe, args.work, args.loss_size)
        loss = loss_curves(py, exe, data, args.loss_epochs, args.threads, args.work, png_loss)
    if not args.skip_scaling:
        run_scaling(args)
    # sizes not run this time keep their previous results (see --keep)
    R = {"meta": meta, "results": res, "step": prof, "gemm_torch": tg, "loss": loss}
    if args.keep and os.path.exists(rpath):
        old = json.load(open(rpath))
        merged = {k: v for k, v in old.get("results", {}).items() if k not in res}
        merged.update(res)
        R["results"] = res = {k: merged[k] for k in SIZES if k in merged}
        for k in ("scvi_version", "torch_version"):
            meta.setdefault(k, old.get("meta", {}).get(k))
        if loss is None:
            R["loss"] = old.get("loss")
    meta["load_after"] = uptime()
    meta["elapsed_s"] = time.perf_counter() - t_start
    log("load after:", meta["load_after"])
    with open(rpath, "w") as f:
        json.dump(R, f, indent=1)
    plots = []
    if make_plot(py, res, png_tp, args.work):
        plots.append(png_tp)
    if R.get("loss") and R["loss"].get("png"):
        plots.append(png_loss)
    write_report(args.out, R, plots)
    log(f"wrote {args.out} in {mins(meta['elapsed_s'])} (estimate was {mins(est)})")


if __name__ == "__main__":
    main()
