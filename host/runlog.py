"""The run log (JSONL) and its plot, one format for host.simulate and host.stream.

Records (host.train.run's `record`): "start" (model, data, options), "train" (one per training
sample: step, epoch, index, label, pred, running_accuracy), "eval_sample" (one per validation
sample of every evaluation), "eval" (step, epoch, accuracy, local_accuracy per layer; step 0 is
the baseline before training), "end" (weights_sha256, accuracies). host.stream adds "resume".

read() is how a log comes back (to plot it): bounded like every file the project reads, each
record checked, one error class (RunLogError) naming the file, the line and the field.
"""
from __future__ import annotations

import json
import math

from host.outputs import OutputError

# One record per training sample (~300 bytes with logits and local predictions) and per validation
# sample of every evaluation: a million-sample run stays well below this.
MAX_RUNLOG_BYTES = 1 << 30


class RunLogError(OutputError):
    """A run log (or a checkpointed run's journal) that cannot be read back: the message names the
    file, the line and the field. An OutputError because the log is a tool's own output, read back
    to plot it, so the tools that write it already report this class as one line with exit 2."""


def title_of(summary: dict) -> str:
    """Model, data and options of a run, for the plot title."""
    opts = [f"{summary.get('epochs')} epoch(s)", f"seed {summary.get('seed')}", summary.get("rule", ""),
            f"lr {summary.get('lr_schedule', '')}"]
    if summary.get("shift"):
        opts.append("shift")
    n = f"{summary.get('train_samples')} train / {summary.get('val_samples', summary.get('eval_samples'))} val"
    return f"{summary.get('model')} on {summary.get('data')} ({n})\n" + ", ".join(o for o in opts if o)


def plot(records, png_path: str, title: str = "") -> None:
    """Validation accuracy per evaluation (the epoch-0 baseline marked), running training
    accuracy, and the per-layer local heads' validation accuracy, against training samples;
    dotted lines at epoch ends. `records`: the log's dicts. Written to `png_path` as is (the
    caller gives a temporary name and renames it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, run_acc, evals, epoch_ends = [], [], [], set()
    last_epoch = None
    for r in records:
        if r["kind"] == "train":
            steps.append(r["step"])
            run_acc.append(r["running_accuracy"])
            if last_epoch is not None and r["epoch"] != last_epoch:
                epoch_ends.add(steps[-2])
            last_epoch = r["epoch"]
        elif r["kind"] == "eval":
            evals.append(r)
    if steps:
        epoch_ends.add(steps[-1])
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    if steps:
        ax.plot(steps, run_acc, color="tab:blue", lw=1, label="train (running)")
    if evals:
        ax.plot([e["step"] for e in evals], [e["accuracy"] for e in evals], "o-", color="tab:red",
                label="validation")
        base = evals[0]
        if base["step"] == 0:
            ax.axhline(base["accuracy"], color="tab:red", ls="--", lw=0.8, alpha=0.7)
            ax.annotate(f"before: {base['accuracy']:.3f}", (0, base["accuracy"]), textcoords="offset points",
                        xytext=(4, 6), fontsize=8, color="tab:red")
            last = evals[-1]
            if last is not base:
                ax.annotate(f"after: {last['accuracy']:.3f}", (last["step"], last["accuracy"]),
                            textcoords="offset points", xytext=(-70, 8), fontsize=8, color="tab:red")
        layers = len(evals[0]["local_accuracy"])
        cmap = plt.get_cmap("viridis")
        xs = [e["step"] for e in evals]
        for i in range(layers):
            ys = [e["local_accuracy"][i] for e in evals]
            if all(y == ys[0] for y in ys) and ys[0] in (0.0,):
                continue                      # no local head on this layer
            ax2.plot(xs, ys, ".-", lw=0.8, ms=3, color=cmap(i / max(1, layers - 1)),
                     label=f"L{i}" if layers <= 16 or i % 4 == 0 or i == layers - 1 else None)
    for a in (ax, ax2):
        for s in sorted(epoch_ends):
            a.axvline(s, color="grey", ls=":", lw=0.8)
        a.set_ylim(-0.02, 1.02)       # curves at exactly 0 or 1 stay visible inside the frame
        a.grid(alpha=0.3)
    ax.set_ylabel("accuracy")
    ax.legend(loc="lower right", fontsize=8)
    ax2.set_ylabel("local heads (val)")
    ax2.set_xlabel("training samples (dotted: end of an epoch)")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=6, ncol=1)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100, format="png")
    plt.close(fig)


# the fields plot() reads, per record kind: name -> what it must be
_NUMBER, _INT, _NUMBERS = "a number", "an integer", "a list of numbers"
REQUIRED = {"train": {"step": _INT, "epoch": _INT, "running_accuracy": _NUMBER},
            "eval": {"step": _INT, "accuracy": _NUMBER, "local_accuracy": _NUMBERS}}


def _is(value, kind: str) -> bool:
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _NUMBER:
        return number(value)
    return isinstance(value, list) and all(number(v) for v in value)


RECORD_OPENING = '{"kind": '       # how every record json.dumps writes starts ("kind" first)


def _after_torn_record(line: str):
    """The record a resumed run appended right after one its crashed predecessor cut short (a
    journal is appended to in place, so the two share a line), or None when the line is not that."""
    at = line.find(RECORD_OPENING, 1)
    for _ in range(4):          # a cut record holds no other record: a few tries, never quadratic
        if at <= 0:
            break
        try:
            rec = json.loads(line[at:])
        except (ValueError, RecursionError):
            at = line.find(RECORD_OPENING, at + 1)
            continue
        return rec if isinstance(rec, dict) and isinstance(rec.get("kind"), str) else None
    return None


def read(path) -> list[dict]:
    """The records of a JSONL run log, read the one bounded way (host.safeio: a regular file of at
    most MAX_RUNLOG_BYTES, UTF-8). Every line is a JSON object with a string "kind"; "train" and
    "eval" records have the fields plot() uses, with their types, and every "eval" has as many
    local accuracies as the first. Two exceptions, both a record cut short by a crash (a journal is
    written as the run goes): a last line without its newline that is not JSON is left out, and so
    is a cut record that a resumed run's first record was appended to, on the same line. Anything
    else raises RunLogError naming the file, the line and the field."""
    from host import safeio
    text = safeio.read_text(path, MAX_RUNLOG_BYTES, "run log", error=RunLogError)
    lines = text.split("\n")
    records, n_local = [], None
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {no}"
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError) as e:
            if no == len(lines):              # no newline after it: a write the crash cut short
                break
            rec = _after_torn_record(line)
            if rec is None:
                raise RunLogError(f"{where}: not a JSON record ({e})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("kind"), str):
            raise RunLogError(f"{where}: not a record (a JSON object with a string \"kind\")")
        for field, kind in REQUIRED.get(rec["kind"], {}).items():
            if not _is(rec.get(field), kind):
                raise RunLogError(f"{where}: {rec['kind']} record: {field}={rec.get(field)!r} is not {kind}")
        if rec["kind"] == "eval":
            if n_local is None:
                n_local = len(rec["local_accuracy"])
            elif len(rec["local_accuracy"]) != n_local:
                raise RunLogError(f"{where}: eval record: local_accuracy has {len(rec['local_accuracy'])} "
                                  f"layers, the first eval record {n_local}")
        records.append(rec)
    return records
