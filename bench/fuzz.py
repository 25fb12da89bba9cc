"""Builds and runs every fuzz target of fuzz/ for a fixed time each, and prints one JSON record
per target.

    python bench/fuzz.py --seconds 30 [--jobs 2] [--only NAME ...] [--json out.json]
    python bench/fuzz.py --c-seconds 600 --py-seconds 300 --jobs 1 --keep-going   # the long run

C targets (fuzz/fuzz_*.c) are libFuzzer programs built with clang -fsanitize=fuzzer,address,
undefined against every ccore/src/*.c; Python targets (fuzz/py_*.py) run under atheris (pip
install '.[test]'). Each starts from its committed seed corpus fuzz/corpus/NAME (made by
fuzz/make_corpus.py with the project's own code); what the run adds goes to the work folder,
never into the repository. A crash, sanitizer report, hang (--timeout), out-of-memory or, for a
Python target, any exception other than the project's own error class stops that target: its
input is kept in the work folder and named in the JSON.

Per target: executions, coverage (libFuzzer's edge count "cov" and features "ft"), corpus size
(inputs in the final corpus), crashes, timeouts, ooms, uncaught_exceptions (Python; their kinds
in exception_kinds), the saved inputs, the logs, seconds. Exit status 1 when any target found anything, 2 for bad arguments or a target
that could not be built or started. Progress goes to stderr, JSON to stdout (and --json).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = os.path.join(ROOT, "fuzz")
CORPUS = os.path.join(FUZZ, "corpus")
SAN_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
C_FLAGS = ["-std=c99", "-g", "-O1", "-I" + os.path.join(ROOT, "ccore", "include"),
           "-I" + os.path.join(ROOT, "ccore", "src")]
# libFuzzer's status lines: "#4096 pulse  cov: 812 ft: 2310 corp: 61/9120b ... exec/s: 812"
STATUS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
ARTIFACT = re.compile(r"^(crash|timeout|oom|leak|slow-unit)-[0-9a-f]+$")


def prog() -> str:
    return "bench/fuzz.py"


def fail(msg: str) -> None:
    print(f"{prog()}: error: {msg}", file=sys.stderr)
    sys.exit(2)


def log(msg: str) -> None:
    print(f"[fuzz {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def targets() -> dict[str, dict]:
    """name -> {"kind": "c" | "py", "src": path}; names are the file names without fuzz_/py_."""
    out = {}
    for src in sorted(glob.glob(os.path.join(FUZZ, "fuzz_*.c"))):
        out[os.path.basename(src)[len("fuzz_"):-2]] = {"kind": "c", "src": src}
    for src in sorted(glob.glob(os.path.join(FUZZ, "py_*.py"))):
        out["py_" + os.path.basename(src)[len("py_"):-3]] = {"kind": "py", "src": src}
    return out


def build_c(names: list[str], tgts: dict, work: str, cc: str, jobs: int) -> dict[str, str]:
    """Compiles the core once (instrumented, no main), then links each target; name -> binary."""
    objdir = os.path.join(work, "obj")
    os.makedirs(objdir, exist_ok=True)
    core = sorted(glob.glob(os.path.join(ROOT, "ccore", "src", "**", "*.c"), recursive=True))
    flags = C_FLAGS + SAN_FLAGS + ["-fsanitize=fuzzer-no-link"]

    def compile_one(src: str) -> str:
        obj = os.path.join(objdir, os.path.relpath(src, ROOT).replace(os.sep, "_") + ".o")
        r = subprocess.run([cc, *flags, "-c", src, "-o", obj], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"{os.path.relpath(src, ROOT)}: {cc} failed: {r.stderr.strip().splitlines()[-1:]}")
        return obj

    log(f"building the core ({len(core)} files) with {cc}, ASan + UBSan + libFuzzer coverage")
    with ThreadPoolExecutor(max(1, jobs)) as ex:
        objs = list(ex.map(compile_one, core))
    out = {}
    for name in names:
        exe = os.path.join(work, "bin", name)
        os.makedirs(os.path.dirname(exe), exist_ok=True)
        cmd = [cc, *C_FLAGS, *SAN_FLAGS, "-fsanitize=fuzzer", tgts[name]["src"], *objs, "-o", exe]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"{os.path.relpath(tgts[name]['src'], ROOT)}: build failed: {r.stderr.strip()[-600:]}")
        out[name] = exe
        log(f"built {name}")
    return out


def parse_log(text: str) -> dict:
    """Executions, coverage, features and corpus size from libFuzzer's output."""
    res = {"executions": 0, "coverage": 0, "features": 0, "corpus_size": 0}
    for m in STATUS.finditer(text):
        res.update(executions=int(m.group(1)), coverage=int(m.group(2)), features=int(m.group(3)),
                   corpus_size=int(m.group(4)))
    m = re.search(r"stat::number_of_executed_units: (\d+)", text)
    if m:
        res["executions"] = int(m.group(1))
    return res


def exception_kinds(text: str) -> list[str]:
    """The first line after each atheris "Uncaught Python exception" banner (e.g. "KeyError: 'lr'")."""
    lines = text.splitlines()
    return [lines[i + 1].strip() for i, line in enumerate(lines[:-1]) if "=== Uncaught Python exception: ===" in line]


def run_target(name: str, t: dict, exe: str | None, seconds: int, work: str, timeout: int,
               rss_mb: int, keep_going: bool = False) -> dict:
    """Runs one target for `seconds`; the JSON record. libFuzzer stops at its first finding; with
    keep_going it is started again (same corpus folder, so progress is kept) until the time is
    used up, and every finding is counted."""
    tdir = os.path.join(work, "run", name)
    new_corpus = os.path.join(tdir, "corpus")
    os.makedirs(new_corpus, exist_ok=True)
    seeds = os.path.join(CORPUS, name)
    env = dict(os.environ, ASAN_OPTIONS="abort_on_error=0:detect_leaks=1:allocator_may_return_null=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    scratch = os.path.join(tdir, "scratch")     # the data-set targets' folders, removed below
    if t["kind"] == "py":
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env["ASAN_OPTIONS"] = "detect_leaks=0"
        env["FUZZ_SCRATCH"] = scratch
        os.makedirs(scratch, exist_ok=True)
    log(f"{name}: running {seconds} s")
    start = time.monotonic()
    res = {"target": name, "kind": t["kind"], "executions": 0, "coverage": 0, "features": 0, "corpus_size": 0}
    uncaught, kinds_seen, rcs, logs, errors = 0, [], [], [], []
    while True:
        left = seconds - int(time.monotonic() - start)
        if left < 1 or (rcs and not keep_going):
            break
        args = [f"-max_total_time={left}", f"-timeout={timeout}", f"-rss_limit_mb={rss_mb}",
                "-print_final_stats=1", f"-artifact_prefix={tdir}{os.sep}", new_corpus]
        if os.path.isdir(seeds):
            args.append(seeds)
        cmd = [exe, *args] if t["kind"] == "c" else [sys.executable, t["src"], *args]
        log_path = os.path.join(tdir, f"fuzz-{len(rcs) + 1}.log")
        logs.append(log_path)
        with open(log_path, "w") as lf:
            # libFuzzer stops itself at max_total_time; the wall-clock guard catches a wedged process
            try:
                rc = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                    timeout=left + 4 * timeout + 120).returncode
            except subprocess.TimeoutExpired:
                rc = None
        rcs.append(rc)
        text = open(log_path, errors="replace").read()
        part = parse_log(text)
        res["executions"] += part["executions"]
        res["coverage"] = max(res["coverage"], part["coverage"])
        res["features"] = max(res["features"], part["features"])
        res["corpus_size"] = part["corpus_size"] or res["corpus_size"]
        kinds = exception_kinds(text)
        uncaught += len(kinds)
        kinds_seen += [k for k in kinds if k not in kinds_seen]
        if rc not in (0, None) and not re.search(r"Test unit written to|ERROR: libFuzzer|Uncaught", text):
            errors.append((text.strip().splitlines() or ["no output"])[-1][:300])
            break                     # it did not even start: running it again will not help
    shutil.rmtree(scratch, ignore_errors=True)
    arts = sorted(f for f in os.listdir(tdir) if ARTIFACT.match(f))
    kinds = [a.split("-")[0] for a in arts]
    crashes = kinds.count("crash") + kinds.count("leak") - (uncaught if t["kind"] == "py" else 0)
    res.update(seconds=round(time.monotonic() - start, 1), crashes=max(crashes, 0),
               timeouts=kinds.count("timeout") + rcs.count(None), ooms=kinds.count("oom"),
               uncaught_exceptions=uncaught, exception_kinds=kinds_seen, runs=len(rcs), exit_status=rcs[-1] if rcs else None,
               inputs=[os.path.join(tdir, a) for a in arts if not a.startswith("slow-unit")],
               corpus_files=len(os.listdir(new_corpus)) + (len(os.listdir(seeds)) if os.path.isdir(seeds) else 0),
               logs=logs)
    found = res["crashes"] + res["timeouts"] + res["ooms"] + res["uncaught_exceptions"]
    # a run that ended badly without leaving an input (e.g. the harness failed to start) is a failure too
    res["ok"] = found == 0 and not errors and all(rc == 0 for rc in rcs)
    if errors:
        res["error"] = errors[0]
    log(f"{name}: {res['executions']} executions, cov {res['coverage']}, ft {res['features']}, "
        f"{found} finding(s){'' if res['ok'] else ' -> FAILED, see ' + logs[-1]}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=prog(), description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=30,
                    help="run time of every target, in seconds (default: %(default)s)")
    ap.add_argument("--c-seconds", type=int, default=None,
                    help="run time of each C target (default: --seconds)")
    ap.add_argument("--py-seconds", type=int, default=None,
                    help="run time of each Python target (default: --seconds)")
    ap.add_argument("--jobs", type=int, default=2,
                    help="targets run at the same time, and parallel compiles (default: %(default)s)")
    ap.add_argument("--only", nargs="+", metavar="NAME", default=None,
                    help="run only these targets (default: all; --list shows the names)")
    ap.add_argument("--keep-going", action="store_true",
                    help="after a finding, start the target again until its time is used up, counting "
                         "every finding (default: stop that target at its first)")
    ap.add_argument("--list", action="store_true", help="print the target names and exit")
    ap.add_argument("--json", metavar="FILE", default=None, help="also write the JSON to FILE (default: none)")
    ap.add_argument("--work", metavar="DIR", default=None,
                    help="build, corpus and crash-input folder (default: a new temporary folder, kept)")
    ap.add_argument("--cc", default=os.environ.get("CC_FUZZ", "clang"),
                    help="clang with libFuzzer (default: $CC_FUZZ or %(default)s)")
    ap.add_argument("--timeout", type=int, default=20,
                    help="seconds one input may run before it counts as a hang (default: %(default)s)")
    ap.add_argument("--rss-mb", type=int, default=2048,
                    help="memory limit of a target in MB, above it an out-of-memory finding (default: %(default)s)")
    a = ap.parse_args(argv)
    tgts = targets()
    if a.list:
        print("\n".join(f"{n}\t{t['kind']}\t{os.path.relpath(t['src'], ROOT)}" for n, t in tgts.items()))
        return 0
    for flag, v in (("--seconds", a.seconds), ("--c-seconds", a.c_seconds), ("--py-seconds", a.py_seconds),
                    ("--jobs", a.jobs), ("--timeout", a.timeout), ("--rss-mb", a.rss_mb)):
        if v is not None and v < 1:
            fail(f"{flag} must be >= 1, got {v}")
    names = list(tgts)
    if a.only:
        unknown = [n for n in a.only if n not in tgts]
        if unknown:
            fail(f"--only: unknown target {unknown[0]!r} (known: {', '.join(tgts)})")
        names = [n for n in names if n in a.only]
    c_names = [n for n in names if tgts[n]["kind"] == "c"]
    if c_names and not shutil.which(a.cc):
        fail(f"--cc: {a.cc} not found (Debian: apt-get install clang libclang-rt-14-dev)")
    if any(tgts[n]["kind"] == "py" for n in names):
        r = subprocess.run([sys.executable, "-c", "import atheris"], capture_output=True, text=True)
        if r.returncode != 0:
            fail("atheris is not installed (pip install '.[test]')")
    work = a.work or tempfile.mkdtemp(prefix="tinylls-fuzz-")
    os.makedirs(work, exist_ok=True)
    log(f"work folder {work}")
    exes = build_c(c_names, tgts, work, a.cc, a.jobs) if c_names else {}

    def seconds_of(n):
        per_kind = a.c_seconds if tgts[n]["kind"] == "c" else a.py_seconds
        return per_kind if per_kind is not None else a.seconds

    with ThreadPoolExecutor(a.jobs) as ex:
        results = list(ex.map(lambda n: run_target(n, tgts[n], exes.get(n), seconds_of(n), work, a.timeout,
                                                   a.rss_mb, a.keep_going), names))
    report = {"work": work, "targets": results,
              "total": {k: sum(r[k] for r in results) for k in
                        ("executions", "crashes", "timeouts", "ooms", "uncaught_exceptions")},
              "ok": all(r["ok"] for r in results)}
    text = json.dumps(report, indent=1)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
