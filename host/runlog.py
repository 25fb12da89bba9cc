"""The run log (JSONL) and its plot, one format for host.simulate and host.stream.

Records (host.train.run's `record`): "start" (model, data, options), "train" (one per training
sample: step, epoch, index, label, pred, running_accuracy), "eval_sample" (one per validation
sample of every evaluation), "eval" (step, epoch, accuracy, local_accuracy per layer; step 0 is
the baseline before training), "end" (weights_sha256, accuracies).
"""
from __future__ import annotations

import json


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


def read(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
