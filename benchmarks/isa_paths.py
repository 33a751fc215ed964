#!/usr/bin/env python3
"""atlasvi's CPU paths (src/isa.h: avx512, avx2, generic) side by side on one machine, next
to scvi-tools on the same simulated file, hyperparameters and threads; writes
docs/benchmarks_isa.md.

  python3 benchmarks/isa_paths.py [--size 100k] [--epochs 1] [--threads 2] [--rounds 2]
                                  [--python VENV/bin/python] [--baseline-build DIR]

Per round, interleaved (the machine is shared and its speed drifts): `atlasvi train` once per
path (ATLASVI_ISA), the optional baseline, scvi-tools once. Then step_bench per path (the
per-step time of the same model, benchmarks/step_bench.c). Cells/s are medians over rounds.

--baseline-build: a build directory of an older atlasvi (e.g. 8ab9b79, before the AVX2 and
generic GEMM kernels), run as it ran on a CPU without AVX-512: AV_SGEMM=blas (its cblas
fallback), AV_SPARSE_ISA=avx2 and OpenBLAS's AVX2 (Haswell) kernels. Its element-wise
clones still take AVX-512 here, so it is a close, not exact, stand-in.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import run as R  # noqa: E402  (benchmarks/run.py: simulate, bench_atlasvi, bench_scvi, ...)


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                f = set(line.split(":", 1)[1].split())
                return [x for x in ("avx2", "fma", "avx512f", "avx512vl") if x in f]
    except OSError:
        pass
    return []


def with_env(extra, fn, *a):
    """Runs fn with extra environment variables set (bench_* read os.environ)."""
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        return fn(*a)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def paths_here():
    """The paths this CPU runs, best first (src/isa.h's levels, by the CPU's flags)."""
    f = cpu_flags()
    out = ["avx512"] if "avx512f" in f and "avx512vl" in f else []
    out += ["avx2"] if "avx2" in f and "fma" in f else []
    return out + ["generic"]


BASELINE_ENV = {"AV_SGEMM": "blas", "AV_SPARSE_ISA": "avx2", "OPENBLAS_CORETYPE": "Haswell"}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="100k", choices=sorted(R.SIZES))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-perf"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--python", default="", help="a python that imports scvi ('' to find or "
                    "make one as benchmarks/run.py does; 'none' to skip scvi-tools)")
    ap.add_argument("--baseline-build", default="")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks_isa.md"))
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    R.run(["cmake", "-S", ROOT, "-B", args.build, "-DCMAKE_BUILD_TYPE=Release"])
    R.run(["cmake", "--build", args.build, "-j2", "--target", "atlasvi"])
    R.run(["sh", os.path.join(HERE, "build_step_bench.sh"), args.build])
    exe = os.path.join(args.build, "atlasvi")
    data = R.simulate(exe, args.work, args.size)
    paths = paths_here()
    py = None if args.python == "none" else R.find_python(args, args.work)
    base = os.path.join(args.baseline_build, "atlasvi") if args.baseline_build else ""
    rates = {p: [] for p in paths}
    rates["baseline"], rates["scvi"] = [], []
    elbo = {}
    load = [R.uptime()]
    for r in range(args.rounds):
        for p in paths:
            a = with_env({"ATLASVI_ISA": p}, R.bench_atlasvi, exe, data, args.epochs,
                         args.threads, args.work, f"isa_{p}")
            rates[p].append(a["cells_per_s"])
            elbo[p] = a["elbo_validation"]
            R.log(f"round {r} {p}: {a['cells_per_s']:.0f} cells/s")
        if base:
            a = with_env(BASELINE_ENV, R.bench_atlasvi, base, data, args.epochs, args.threads,
                         args.work, "isa_baseline")
            rates["baseline"].append(a["cells_per_s"])
            elbo["baseline"] = a["elbo_validation"]
            R.log(f"round {r} baseline: {a['cells_per_s']:.0f} cells/s")
        if py:
            s = R.bench_scvi(py, data, args.epochs, args.threads, 0)
            rates["scvi"].append(s["cells_per_s"])
            elbo["scvi"] = s["elbo_validation"]
            R.log(f"round {r} scvi-tools: {s['cells_per_s']:.0f} cells/s")
    load.append(R.uptime())
    steps = {}
    for p in paths:
        steps[p] = with_env({"ATLASVI_ISA": p}, R.step_bench, args.build, args.threads)
    scvi_version = ""
    if py:
        scvi_version = subprocess.run([py, "-c", "import scvi, torch; print(scvi.__version__, "
                                       "'torch', torch.__version__)"], capture_output=True,
                                      text=True).stdout.strip()
    write(args, paths, rates, elbo, steps, load, scvi_version, bool(base))
    json.dump({"rates": rates, "elbo": elbo, "steps": steps},
              open(os.path.join(args.work, "isa_paths.json"), "w"), indent=1)


def med(xs):
    return statistics.median(xs) if xs else None


def write(args, paths, rates, elbo, steps, load, scvi_version, has_base):
    n_train = R.n_train_of(R.SIZES[args.size]) * args.epochs
    sc = med(rates["scvi"])
    L = ["# atlasvi's CPU paths side by side\n",
         f"Generated by `python3 benchmarks/isa_paths.py` (do not edit by hand). CPU: "
         f"**{cpu_model()}** ({', '.join(cpu_flags())}); {args.threads} threads; "
         f"{args.size} simulated cells x 2000 genes, 4 batches, {args.epochs} epoch(s) "
         f"({n_train:,} training cells), default scVI, batch 128; median of {args.rounds} "
         "interleaved rounds.",
         f"Load before / after: `{load[0]}` / `{load[-1]}`.\n",
         "| trainer | path | cells/s (median) | runs | x scvi-tools | held-out ELBO | "
         "step ms (step_bench) | av_sgemm GFLOP/s |",
         "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"]

    def row(name, path, key):
        xs = rates[key]
        if not xs:
            return
        m = med(xs)
        st = steps.get(key) or {}
        step_ms = st.get("step_ms")
        gf = st.get("av_sgemm_gflops")
        L.append(f"| {name} | {path} | {m:,.0f} | {', '.join(f'{x:,.0f}' for x in xs)} | "
                 f"{(m / sc) if sc else float('nan'):.2f}x | {elbo.get(key, float('nan')):.1f} | "
                 f"{'' if step_ms is None else f'{step_ms:.2f}'} | "
                 f"{'' if gf is None else f'{gf:.0f}'} |")

    for p in paths:
        row("atlasvi", p, p)
    if has_base:
        row("atlasvi 8ab9b79 (before)", "cblas fallback, AVX2 OpenBLAS", "baseline")
    if rates["scvi"]:
        L.append(f"| scvi-tools {scvi_version} | PyTorch | {sc:,.0f} | "
                 f"{', '.join(f'{x:,.0f}' for x in rates['scvi'])} | 1.00x | "
                 f"{elbo.get('scvi', float('nan')):.1f} | | |")
    L.append("")
    L.append("Paths: `avx512` and `avx2` run the same GEMM arithmetic (bitwise equal results); "
             "`generic` is the portable C that ARM builds run, here compiled for the x86-64 "
             "baseline (SSE4.2, no FMA), so it is the slowest path on x86 and the one that "
             "differs in the last bits. The held-out ELBO is on the same validation cells for "
             "every row. See docs/hpc.md, \"CPU paths\".\n")
    open(args.out, "w").write("\n".join(L))
    R.log("wrote", args.out)


if __name__ == "__main__":
    main()
