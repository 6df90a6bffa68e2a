"""Figures of `negotiax interpret`, one function per analysis: result dict in, PNG path out."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import pyplot, save_figure


def _matrix(ax, values, rows, cols, title, vmin=0.0, vmax=1.0, cmap="viridis"):
    arr = np.array(values, dtype=float)
    im = ax.imshow(arr, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            ax.text(j, i, "–" if np.isnan(arr[i, j]) else f"{arr[i, j]:.2f}", ha="center", va="center",
                    color="white" if arr[i, j] < (vmin + vmax) / 2 else "black", fontsize=9)
    ax.set_title(title, fontsize=10)
    return im


def plot_trajectories(result: dict, path: Path) -> Path:
    plt = pyplot()
    traj = result["trajectories"]
    layers = [e["layer"] for e in traj["layers"]]
    point_entries = [e for e in traj["layers"] if "points" in e]
    fig, axes = plt.subplots(1, 2 + len(point_entries), figsize=(5.2 * (2 + len(point_entries)), 4.4))
    for g in traj["groups"]:
        axes[0].plot(layers, [e["groups"][g]["shift"] for e in traj["layers"]], marker=".", label=g)
    for layer in result.get("layers", []):
        axes[0].axvline(layer + 1, color="grey", linestyle=":", linewidth=1)
    axes[0].set(xlabel="layer (0 = embeddings)", ylabel="||mean trained - mean base|| / ||mean base||",
                title="how far the circuit moves each prompt type")
    for kind, style in (("base", "--"), ("trained", "-")):
        axes[1].plot(layers, [e["separation"][kind] for e in traj["layers"]], style, label=kind)
    axes[1].set(xlabel="layer", ylabel="between / within distance", title="separation of prompt types")
    for ax, entry in zip(axes[2:], point_entries):
        for g, pts in entry["points"].items():
            b, t = np.array(pts["base"]), np.array(pts["trained"])
            line = ax.scatter(t[:, 0], t[:, 1], s=10, label=f"{g} trained")
            ax.scatter(b[:, 0], b[:, 1], s=10, facecolors="none", edgecolors=line.get_facecolor(), label=f"{g} base")
        ax.set(title=f"PCA of layer {entry['layer']} (explained {entry['explained']:.0%})", xlabel="PC1", ylabel="PC2")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_heatmap(result: dict, path: Path) -> Path:
    plt = pyplot()
    heat = result["heatmap"]
    objectives = result["objectives"]
    rows = list(heat)
    values = [[heat[g]["mean"][o] for o in objectives] for g in rows]
    fig, ax = plt.subplots(figsize=(1.6 * len(objectives) + 2.5, 0.7 * len(rows) + 2))
    im = _matrix(ax, values, [f"{g} (n={heat[g]['n']})" for g in rows], objectives,
                 "mean negotiation weight α over real tokens", vmin=0.0, vmax=max(1.0 / len(objectives) * 2, 0.01))
    fig.colorbar(im, ax=ax)
    ax.set(xlabel="objective", ylabel="prompt type")
    return save_figure(fig, path)


METRIC_LABELS = {"refusal_harmful": "refusal, harmful (↑)", "over_refusal_benign": "over-refusal, benign (↓)",
                 "mc1": "MC1 (↑)", "mc2": "MC2 (↑)", "ref_nll": "reference NLL (↓)"}


def _bar_panels(axes, conditions: dict[str, dict], metrics: list[str]):
    names = list(conditions)
    for ax, metric in zip(axes, metrics):
        vals = [conditions[c][metric]["value"] for c in names]
        lo = [conditions[c][metric]["ci"][0] for c in names]
        hi = [conditions[c][metric]["ci"][1] for c in names]
        v = np.array([np.nan if x is None else x for x in vals], dtype=float)
        err = np.array([[0 if x is None or l is None else x - l for x, l in zip(vals, lo)],
                        [0 if x is None or h is None else h - x for x, h in zip(vals, hi)]], dtype=float)
        ax.bar(range(len(names)), v, yerr=err, capsize=3, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=10)
        ax.grid(alpha=0.3, axis="y")


def plot_interventions(result: dict, path: Path) -> Path:
    plt = pyplot()
    conds = {("mute " + k if k != "none" else "no mute"): v["metrics"] for k, v in result["interventions"].items()}
    metrics = list(METRIC_LABELS)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 4))
    _bar_panels(axes, conds, metrics)
    fig.suptitle("causal interventions: mute one objective at a time (95% bootstrap intervals)", fontsize=11)
    return save_figure(fig, path)


def plot_geometry(result: dict, path: Path) -> Path:
    plt = pyplot()
    geo = result["geometry"]
    objectives = result["objectives"]
    sites = list(geo["subspaces"])
    fig, axes = plt.subplots(len(sites), 3, figsize=(13, 3.8 * len(sites)), squeeze=False)
    for row, site in zip(axes, sites):
        sub, shift = geo["subspaces"][site], geo["shifts"].get(site)
        base = sub["random_baseline"]["mean"]
        _matrix(row[0], sub["read_overlap"], objectives, objectives,
                f"layer {site} read subspaces D_i (random: {base:.3f})")
        _matrix(row[1], sub["write_overlap"], objectives, objectives,
                f"layer {site} write subspaces U_i (random: {base:.3f})")
        if shift:
            rnd = shift["random_baseline"]["mean_abs"]
            _matrix(row[2], shift["shift_cosine"], objectives, objectives,
                    f"cosine of mean shifts z_i - h (random |cos|: {rnd:.3f})", vmin=-1.0, vmax=1.0, cmap="coolwarm")
    return save_figure(fig, path)


def plot_blind_spots(result: dict, path: Path) -> Path:
    plt = pyplot()
    spots = result["blind_spots"]
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, 1, 26)
    for g, s in spots.items():
        rate = "–" if s["misrouted_rate"] is None else f"{s['misrouted_rate']:.0%}"
        ax.hist(s["entropy"], bins=bins, alpha=0.5, label=f"{g}: misrouted {rate}, uncertain {s['uncertain_rate']:.0%}")
    ax.set(xlabel="normalised entropy of α (1 = no objective decides)", ylabel="prompts",
           title="blind spots: uncertain or misrouted negotiation")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_forgetting(result: dict, path: Path) -> Path:
    plt = pyplot()
    f = result["forgetting"]
    objectives = [o for o in f["objectives"] if o in f["joint"]]
    conds = {"joint": f["joint"]}
    for i, stage in enumerate(f["sequential"]):
        conds[f"seq {i + 1}: {stage['after']}"] = stage["metrics"]
    fig, axes = plt.subplots(1, len(objectives), figsize=(4 * len(objectives), 4), squeeze=False)
    for ax, o in zip(axes[0], objectives):
        _bar_panels([ax], {c: {o: m[o]} for c, m in conds.items()}, [o])
        ax.set_title(f"{o}: {f['metric'][o]}", fontsize=10)
    fig.suptitle("catastrophic forgetting: joint vs one objective after another", fontsize=11)
    return save_figure(fig, path)


PLOTS = {"trajectories": plot_trajectories, "heatmap": plot_heatmap, "interventions": plot_interventions,
         "geometry": plot_geometry, "blind_spots": plot_blind_spots, "forgetting": plot_forgetting}
