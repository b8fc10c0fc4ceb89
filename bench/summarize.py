"""Collect every bench/results/*.json into BENCHMARKS.md (machine, date, commit, tables).

Known benchmarks (uq, uq_sweep, overhead) get purpose-made tables; any other result file
(written by another script) is rendered generically: its scalar values as a two-column
table of dotted keys, long lists summarised. Every section names the machine, the date
and the git commit the result came from (or says that the file did not record them).

Also home of `machine_info()`, the machine record the benchmarks in this folder write.

Run: python bench/summarize.py [--results bench/results] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "BENCHMARKS.md"
MAX_GENERIC_ROWS = 60


# ----------------------------------------------------------------------------- machine info
def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (falls back to platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> dict[str, Any]:
    """HEAD commit and whether the working tree differs from it (others edit it too)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def machine_info(threads: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """CPU model, cores, load, python/torch versions, device, torch threads."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "device": device,
        "load_average_1_5_15": list(os.getloadavg()),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = threads if threads is not None else torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- formatting
def fmt(value: Any, digits: int = 3) -> str:
    """Compact cell text: floats to `digits` significant figures, None as '—'."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v, digits) for v in value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.{digits}g}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{max(digits - 1, 1)}f}"
    return str(value)


def table(header: list[str], rows: Iterable[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(result: dict[str, Any]) -> str:
    """One line: date, commit, machine (whatever the file recorded)."""
    date = result.get("date") or result.get("created_at") or result.get("timestamp") or "date not recorded"
    git = result.get("git") if isinstance(result.get("git"), dict) else {}
    commit = git.get("commit") or result.get("git_commit") or result.get("commit")
    dirty = git.get("dirty")
    commit_txt = f"`{commit[:10]}`" + (" (working tree had uncommitted changes)" if dirty else "") if commit else "commit not recorded"
    m = result.get("machine") if isinstance(result.get("machine"), dict) else {}
    cpu = m.get("cpu") or m.get("processor") or "cpu not recorded"
    parts = [cpu, f"{m.get('cpu_count', '?')} cores"]
    if m.get("torch"):
        parts.append(f"torch {m['torch']}" + (f", {m['torch_threads']} threads" if m.get("torch_threads") else ""))
    if m.get("gpu"):
        parts.append(f"GPU {m['gpu']}")
    load = m.get("load_average_1_5_15") or m.get("load_average") or result.get("load_average_1_5_15_before")
    if load:
        parts.append("load avg " + "/".join(f"{x:.1f}" for x in load))
    return f"*{date} · {commit_txt} · {', '.join(parts)}*"


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted (key, scalar) pairs of nested dicts; lists of scalars shown inline or summarised."""
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list):
        if all(isinstance(v, int | float | str | bool) or v is None for v in value):
            if len(value) <= 4:
                return [(prefix, ", ".join(fmt(v) for v in value))]
            nums = [v for v in value if isinstance(v, int | float) and not isinstance(v, bool)]
            if nums:
                return [(prefix, f"{len(value)} values, min {fmt(min(nums))}, max {fmt(max(nums))}")]
            return [(prefix, f"{len(value)} values")]
        return [(prefix, f"list of {len(value)} records")]
    return [(prefix, value)]


# ----------------------------------------------------------------------------- sections
def record_lists(value: Any, prefix: str = "") -> list[tuple[str, list[dict[str, Any]]]]:
    """Every list of records (dicts) inside `value`, with its dotted key."""
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in record_lists(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [(prefix, value)]
    return []


def generic_section(name: str, result: dict[str, Any]) -> str:
    body_src = {k: v for k, v in result.items() if k not in ("machine", "benchmark", "date", "created_at", "timestamp")}
    rows = flatten(body_src)
    more = len(rows) - MAX_GENERIC_ROWS
    parts = [table(["quantity", "value"], [[f"`{k}`", v] for k, v in rows[:MAX_GENERIC_ROWS]])]
    if more > 0:
        parts.append(f"({more} more values in the JSON file)")
    for key, records in record_lists(body_src):
        columns = list(dict.fromkeys(k for r in records for k, v in r.items() if not isinstance(v, dict | list)))
        parts.append(f"`{key}`:\n\n" + table(columns, [[r.get(c) for c in columns] for r in records[:MAX_GENERIC_ROWS]]))
    return "\n\n".join(parts)


UQ_COLUMNS = ["method", "F MAE", "F RMSE", "E MAE/atom (meV)", "Spearman atom", "ROC-AUC atom",
              "Spearman config", "ROC-AUC config", "mean σ / mean err"]


def _ci(m: dict[str, Any], key: str) -> str:
    value, ci = m.get(key), m.get(f"{key}_ci95")
    if value is None:
        return "—"
    return f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{value:.3f}"


def uq_metric_row(label: str, m: dict[str, Any]) -> list[Any]:
    ratio = m["sigma_mean"] / m["error_mean"] if m.get("sigma_mean") is not None and m.get("error_mean") else None
    return [label, m["force_mae"], m["force_rmse"], 1e3 * m["energy_mae_per_atom"], _ci(m, "spearman_atom"),
            _ci(m, "roc_auc_atom"), _ci(m, "spearman_config"), _ci(m, "roc_auc_config"), ratio]


def uq_section(name: str, result: dict[str, Any]) -> str:
    out = []
    s = result.get("settings", {})
    if s:
        out.append("Settings: " + ", ".join(f"{k} = `{json.dumps(v)}`" for k, v in s.items() if not isinstance(v, dict)))
        out.append("")
    for track, tr in result.get("tracks", {}).items():
        out.append(f"#### Track `{track}`\n")
        if tr.get("description"):
            out.append(tr["description"] + "\n")
        methods = tr["methods"]
        sets = list(next(iter(methods.values()))["sets"])
        for set_name in sets:
            desc = tr.get("sets", {}).get(set_name, {}).get("description", "")
            out.append(f"**{set_name}** {('— ' + desc) if desc else ''}\n")
            out.append(table(UQ_COLUMNS, [uq_metric_row(meth, r["sets"][set_name]) for meth, r in methods.items()]))
            out.append("")
        elem_rows, authors = [], False
        for set_name in sets:
            for meth, r in methods.items():
                be = r["sets"][set_name].get("by_element")
                if be:
                    authors = authors or "roc_auc_atom_authors" in r["sets"][set_name]
                    cells = [f"{fmt(v['spearman_atom'])} / {fmt(v['roc_auc_atom'])}"
                             + (f" ({fmt(v.get('roc_auc_atom_authors'))})" if authors else "") for v in be.values()]
                    if authors:
                        cells.append(fmt(r["sets"][set_name].get("roc_auc_atom_authors")))
                    elem_rows.append([set_name, meth, *cells])
                    elements = list(be)
        if elem_rows:
            out.append("Within-element ranking (Spearman / ROC-AUC among atoms of one element; the pooled numbers "
                       "above also reward knowing which element has the larger errors"
                       + ("; in brackets and in the last column the authors' ROC-AUC variant: σ above a threshold "
                          "is the label, the error the score, best of 19 σ quantiles 5 %…95 %, optimistic by "
                          "construction" if authors else "") + "):\n")
            out.append(table(["set", "method", *elements, *(["pooled, authors' AUC"] if authors else [])], elem_rows))
            out.append("")
        rot_rows = []
        for set_name in sets:
            for meth, r in methods.items():
                rs = r["sets"][set_name].get("rotation_stability")
                if rs:
                    rot_rows.append([set_name, meth, *[" / ".join("—" if x is None else f"{x:.4f}" for x in
                                                                  (v["spearman_pooled"], v["spearman_frame_median"]))
                                                       for v in rs.values()]])
                    rot_elements = list(rs)
        if rot_rows:
            out.append("Rotation stability: Spearman of per-atom σ between each frame and a rigidly rotated copy, "
                       "within each element (pooled over the set / median over frames; 1 = the ranking does not "
                       "depend on the orientation):\n")
            out.append(table(["set", "method", *rot_elements], rot_rows))
            out.append("")
        if len(sets) > 1:
            first = sets[0]
            rows = []
            for meth, r in methods.items():
                ref = r["sets"][first]
                if ref.get("sigma_mean") is None:
                    continue
                cells = []
                for x in sets[1:]:
                    sr, er = r["sets"][x]["sigma_mean"] / ref["sigma_mean"], r["sets"][x]["error_mean"] / ref["error_mean"]
                    cells.append(f"{sr:.2f} / {er:.2f} → {sr / er:.2f}")
                rows.append([meth, *cells])
            out.append(f"Shift response: mean σ and mean error on each set relative to `{first}` (σ ratio / error "
                       "ratio → their quotient; a σ that tracks the error shift has a quotient near 1):\n")
            out.append(table(["method", *sets[1:]], rows))
            out.append("")
        cost = []
        for meth, r in methods.items():
            t, inf = r["train"], r["inference"]
            cost.append([meth, t["n_models"], t["epochs_run"], t["wall_s_per_epoch"], t["cpu_s_per_epoch"],
                         t["wall_s"], 1e3 * inf["wall_s_per_frame"], 1e3 * inf["cpu_s_per_frame"], inf["passes"]])
        out.append("Cost (training: all models of the method; inference: forces + σ on the ID test set):\n")
        out.append(table(["method", "models", "epochs", "train wall s/epoch", "train CPU s/epoch", "train wall s",
                          "infer wall ms/frame", "infer CPU ms/frame", "passes"], cost))
        out.append("")
        probe = tr.get("epoch_cost_probe")
        if probe:
            ref = probe["medians"]["eIP"]["epoch_cpu_s"]
            out.append(f"Side-by-side epoch cost ({probe['rounds']} rounds; {probe['note']}):\n")
            out.append(table(["method", "epoch wall s", "epoch CPU s", "CPU × eIP"],
                             [[m, v["epoch_wall_s"], v["epoch_cpu_s"], v["epoch_cpu_s"] / ref]
                              for m, v in probe["medians"].items()]))
            out.append("")
    if result.get("notes"):
        out.append("Notes: " + result["notes"])
    return "\n".join(out)


def uq_sweep_section(name: str, result: dict[str, Any]) -> str:
    out = []
    rows = []
    for run in result["runs"]:
        sel = run["selection_score"]
        v = run["sets"]["valid"]
        rows.append([run["label"], run["q"], run["lam"], run["w"], run.get("lr"), run.get("batch_size"),
                     v["force_mae"], 1e3 * v["energy_mae_per_atom"], v["spearman_atom"], v["roc_auc_atom"],
                     run["sets"]["select_ood"]["spearman_atom"], run["sets"]["select_ood"]["roc_auc_atom"],
                     sel, "**yes**" if run["label"] == result["chosen"]["label"] else ""])
    out.append(table(["run", "q", "λ", "w", "lr", "batch", "valid F MAE", "valid E MAE/atom (meV)",
                      "valid Spearman", "valid AUC", "450 K Spearman", "450 K AUC", "score", "chosen"], rows))
    out.append("")
    out.append(f"Rule: {result['rule']}")
    out.append(f"\nChosen: `{json.dumps({k: result['chosen'][k] for k in ('q', 'lam', 'w', 'lr', 'batch_size')})}`")
    return "\n".join(out)


def overhead_section(name: str, result: dict[str, Any]) -> str:
    rows = []
    for gen in result["generations"]:
        rows.append([gen["generation"], gen["total_s"], gen["train_s"], gen["md_s"], gen["label_s"],
                     gen["overhead_s"], gen["overhead_fraction"]])
    out = [table(["generation", "total s", "train s", "MD/UDD s", "labeling s", "overhead s", "overhead fraction"], rows)]
    pf = result.get("prefect")
    if pf:
        out.append(f"\nWith Prefect (whole flow of {pf['generations']} generations, one worker, start-up included): "
                   f"{fmt(pf['total_s'])} s total, of which training {fmt(pf['train_s'])} s, MD/UDD {fmt(pf['md_s'])} s, "
                   f"labeling {fmt(pf['label_s'])} s → overhead {fmt(pf['overhead_s'])} s "
                   f"({fmt(pf['overhead_s_per_generation'])} s per generation, fraction {fmt(pf['overhead_fraction'])}).")
    if result.get("overhead_by_step"):
        out.append("\nOverhead by step (s, summed over generations):\n")
        out.append(table(["step", "seconds"], [[k, v] for k, v in result["overhead_by_step"].items()]))
    if result.get("notes"):
        out.append("\nNotes: " + result["notes"])
    return "\n".join(out)


def uq_headline(result: dict[str, Any]) -> str:
    """Atom-level ROC-AUC / Spearman of every method on every test set, one row per set."""
    rows, methods = [], None
    for track, tr in result["tracks"].items():
        methods = [m for m in tr["methods"] if tr["methods"][m]["sets"][next(iter(tr["methods"][m]["sets"]))]["roc_auc_atom"] is not None]
        for set_name in next(iter(tr["methods"].values()))["sets"]:
            cells = []
            for m in methods:
                r = tr["methods"][m]["sets"][set_name]
                within = ", ".join(f"{el} {v['roc_auc_atom']:.2f}" for el, v in (r.get("by_element") or {}).items())
                cells.append(f"{r['roc_auc_atom']:.3f} / {r['spearman_atom']:.3f}" + (f" ({within})" if within else ""))
            rows.append([f"{track}: {set_name}", *cells])
    return table(["test set", *[f"{m} AUC / ρ" for m in methods or []]], rows)


TARGET_METHODS = ("eIP", "eIP + novelty", "eIP + LLPR", "eIP + novelty + LLPR")
ROTATION_TARGET = 0.999


def uq_targets(result: dict[str, Any]) -> str:
    """Issue #24's targets for the symmetric-head eIP rows: within-element and pooled atom
    ROC-AUC ≥ the ensemble's, within-element rotation rank correlation ≥ 0.999, and
    σ ratio / error ratio ≥ the ensemble's on the shifted sets; '' without an ensemble."""
    rows = []
    for track, tr in result["tracks"].items():
        methods = tr["methods"]
        ens = next((m for m in methods if m.startswith("ensemble")), None)
        if ens is None:
            continue
        for meth in (m for m in TARGET_METHODS if m in methods):
            for set_name, r in methods[meth]["sets"].items():
                e = methods[ens]["sets"][set_name]
                cells = [f"{r['roc_auc_atom']:.3f} vs {e['roc_auc_atom']:.3f} "
                         f"{'met' if r['roc_auc_atom'] >= e['roc_auc_atom'] else 'missed'}"]
                for el, v in r["by_element"].items():
                    ev = e["by_element"][el]["roc_auc_atom"]
                    cells.append(f"{v['roc_auc_atom']:.2f} vs {ev:.2f} {'met' if v['roc_auc_atom'] >= ev else 'missed'}")
                rot = min(v["spearman_pooled"] for v in r.get("rotation_stability", {}).values()) \
                    if r.get("rotation_stability") else None
                cells.append("—" if rot is None else f"{rot:.4f} {'met' if rot >= ROTATION_TARGET else 'missed'}")
                sr, er = methods[meth].get("shift_response", {}), methods[ens].get("shift_response", {})
                if set_name in sr and set_name in er:
                    a, b = sr[set_name]["sigma_over_error_ratio"], er[set_name]["sigma_over_error_ratio"]
                    cells.append(f"{a:.2f} vs {b:.2f} {'met' if a >= b else 'missed'}")
                else:
                    cells.append("—")
                rows.append([f"{track}: {set_name}", meth, *cells])
                elements = list(r["by_element"])
    if not rows:
        return ""
    return table(["test set", "method", f"pooled AUC vs {ens}", *[f"{el} AUC vs ensemble" for el in elements],
                  f"rotation ρ (min over elements, target ≥ {ROTATION_TARGET})", "σ/error shift quotient vs ensemble"],
                 rows)


def campaign_section(name: str, result: dict[str, Any]) -> str:
    """Scale, replicate summary, replicate-0 tables (test errors; stability, waste, audit, cost), findings."""
    sc = result["scale"]
    reps = result.get("replicates", [0])
    out = [f"Scale `{sc['name']}`: {sc['generations']} generations, {sc['n_molecules']} H2O, seed {sc['seed_frames']} "
           f"frames, {sc['n_select']} labels per generation, {sc['epochs']} epochs, walkers {sc['walker_steps']} steps "
           f"of 0.5 fs; stability MD {sc['stability_seeds']} seeds × {sc['stability_steps']} steps at 300 K and "
           f"{sc['hot_K']:g} K; replicates {', '.join(map(str, reps))}. Summed over runs: loop wall "
           f"{fmt(result.get('total_loop_wall_s'))} s, evaluation wall {fmt(result.get('total_eval_wall_s'))} s, "
           f"process CPU {fmt(result.get('total_cpu_s'))} s. Same seed dataset in every run: "
           f"{fmt(result.get('same_seed_dataset'))}. Test sets (frames): "
           + ", ".join(f"{k} {v}" for k, v in result["test_sets"].items()) + ".", ""]
    out += [f"- {n}" for n in result.get("notes", [])]
    if "ensemble" not in result["generations"]:
        out.append("- Strategy (d) (`--strategies ensemble`: model.uncertainty = ensemble, 4 members) is not in "
                   "this result.")
    out += [""]
    out += ["How to run: `OMP_NUM_THREADS=1 PYTHONPATH=. nice -n 15 python bench/bench_campaign.py --scale reduced` "
            "(or `--scale full`; `--strategies eip md random ensemble` and `--replicates 0 1` pick a subset, so runs "
            "can go in parallel processes and a last call with all of them collects the results). Work files go to "
            "bench/data/campaign/<scale>/ and every step resumes; `--quick` is the smoke test of "
            "tests/test_bench_campaign.py.", ""]
    sets = list(result["test_sets"])
    hot = f"{sc['hot_K']:g}K"
    summ = []
    for s, gens in result.get("replicate_summary", {}).items():
        for g in gens:
            cell = [f"{g[k]['mean']:.4f} ({g[k]['min']:.4f}–{g[k]['max']:.4f})" for k in sets]
            stab = [f"{g[f'stable_{t}']['mean'] / 1000:.3g} ({g[f'stable_{t}']['min'] / 1000:.3g}–"
                    f"{g[f'stable_{t}']['max'] / 1000:.3g})" for t in ("300K", hot)]
            summ.append([s, g["generation"], "/".join(str(n) for n in sorted(set(g["n_labels"]))), *cell, *stab])
    if summ:
        out += [f"Replicate summary: mean (min–max) over {len(reps)} replicate(s) of the held-out force MAE (eV/Å) "
                "and of the stable MD time (ps):", "",
                table(["strategy", "gen", "labels", *[f"F MAE {k}" for k in sets], "300 K ps", f"{hot} ps"], summ), ""]
    rows, loop = [], []
    for s, gens in result["generations"].items():
        for g in gens:
            t = g["test"]
            rows.append([s, g["generation"], g["n_labels"], *[t[k]["force_mae"] for k in sets],
                         t["dft_geometries"]["force_rmse"], 1000 * t["id_300K"]["energy_mae_per_atom"],
                         1000 * t["dft_geometries"]["energy_mae_per_atom"]])
            st, a = g["stable"], g.get("audit") or {}
            collapsed = [w["walker"] for w in g["walkers"] if w["collapsed"]]
            loop.append([s, g["generation"], st["300K"]["mean_fs"] / 1000, st["300K"]["full_length_fraction"],
                         st[hot]["mean_fs"] / 1000, st[hot]["full_length_fraction"], ", ".join(collapsed) or "none",
                         g["n_selected"], g["wasted_fraction"], a.get("spearman_atom"), a.get("roc_auc_atom"),
                         g["train_wall_s"], g["explore_wall_s"], g["select_wall_s"], g.get("cpu_s")])
    out += [f"Replicate {reps[0]} in detail. Force MAE (eV/Å) on the held-out sets, model of generation g (trained "
            "on `labels` frames):", "",
            table(["strategy", "gen", "labels", *[f"F MAE {k}" for k in sets], "F RMSE dft_geometries",
                   "E MAE id (meV/atom)", "E MAE dft (meV/atom)"], rows), "",
            "Stable NVT MD time (ps, mean over seeds; `full`: share reaching the cap), walkers that collapsed in "
            "the loop, selected frames, wasted share (failed or quarantined labels), audit of the selecting model "
            "on the frames it chose, wall seconds per step (generation.json) and process CPU s of the generation:", "",
            table(["strategy", "gen", "300 K ps", "full", f"{hot} ps", "full", "collapsed walkers", "selected",
                   "wasted", "audit ρ atom", "audit AUC atom", "train s", "explore s", "select s", "CPU s"], loop)]
    if result.get("findings"):
        out += ["", "Findings:", "", *[f"- {x}" for x in result["findings"]]]
    if result.get("figures"):
        out += ["", "Figures: " + ", ".join(f"[{Path(f).name}]({f})" for f in result["figures"])]
    return "\n".join(out)


def replicas_section(name: str, result: dict[str, Any]) -> str:
    """bench_explore.py --replicas: walker replicas per box size in each measured mode (ASE engine
    one by one = sequential, ASE engine sharing passes = batched, the device engine = device)."""
    modes = result.get("modes", ["sequential", "batched"])
    rows = []
    for atoms, by_n in result["by_atoms"].items():
        for n, v in by_n.items():
            rows.append([int(atoms), int(n), *(v[m]["replica_steps_per_s"] for m in modes),
                         *(v["speedup" if m == "batched" else f"speedup_{m}"] for m in modes[1:]),
                         *(v[m]["cpu_per_replica_step_ms"] for m in modes)])
    header = ["atoms", "replicas", *(f"{m} steps/s" for m in modes),
              *(f"{m} / {modes[0]} (wall)" for m in modes[1:]), *(f"{m} CPU ms/step" for m in modes)]
    compiled = " Backbone compiled (explore.compile)." if result.get("compiled") else ""
    text = [f"{result['kind']} walkers, {result['steps_per_replica']} steps each, {result['rounds']} timed round(s); "
            f"device {result['machine'].get('device', 'cpu')}.{compiled}", table(header, rows)]
    text += [f"**{key.replace('_', ' ')}**: {result[key]}" for key in ("note", "measured", "not_measured", "reading")
             if result.get(key)]
    return "\n\n".join(text)


SECTIONS: dict[str, Callable[[str, dict[str, Any]], str]] = {
    "uq": uq_section,
    "uq_sweep": uq_sweep_section,
    "overhead": overhead_section,
    "campaign": campaign_section,
    "explore-replicas": replicas_section,
}


def run_lines(bench_dir: Path) -> list[str]:
    """The 'Run: …' usage line of every bench/*.py docstring (how to reproduce each result)."""
    lines = []
    for path in sorted(bench_dir.glob("*.py")):
        for line in path.read_text().splitlines():
            if line.startswith("Run: "):
                lines.append(f"    {line.removeprefix('Run: ').strip()}")
                break
    return lines


def render(results_dir: Path) -> str:
    """BENCHMARKS.md text for every *.json in `results_dir` (sorted by file name)."""
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `python bench/summarize.py` from `{results_dir.relative_to(ROOT) if results_dir.is_relative_to(ROOT) else results_dir}/*.json`"
        f" on {now_iso()}. Each section names the machine, date and commit of its own run;",
        "CPU timings on a shared machine are noisy (others ran tests concurrently: see the load averages).",
        "Each script's docstring says what it measures. Reproduce from the repository root:",
        "",
        *run_lines(ROOT / "bench"),
        "",
    ]
    files = sorted(results_dir.glob("*.json"))
    if not files:
        parts.append("No results yet.")
    uq_results = []
    for uq_file in sorted(results_dir.glob("uq*.json")):
        try:
            uq_results.append((uq_file, json.loads(uq_file.read_text())))
        except (OSError, json.JSONDecodeError):
            continue
    # results of the current heads first; earlier comparisons (no `eip_heads` setting) after
    uq_results.sort(key=lambda fr: not isinstance(fr[1], dict) or "eip_heads" not in fr[1].get("settings", {}))
    for uq_file, result in uq_results:
        try:
            if not isinstance(result, dict) or result.get("benchmark") != "uq":
                continue
            epochs = result.get("settings", {}).get("train", {}).get("epochs", "?")
            parts += [f"## Headline: uncertainty quality, {epochs} epochs (`{uq_file.name}`)", "",
                      "Atom-level ROC-AUC / Spearman as in the paper (§4), and in brackets the ROC-AUC within "
                      "each element (0.5 = no skill beyond knowing the element)."
                      + (f" Methods: {result['settings']['eip_heads']}." if "eip_heads" in result.get("settings", {})
                         else " eIP here is the paper's per-component head (before the symmetric head)."),
                      "", uq_headline(result), ""]
            targets = uq_targets(result) if "eip_heads" in result.get("settings", {}) else ""
            if targets:
                parts += ["Targets (issue #24) for the symmetric-head eIP, against the 4-model ensemble:", "",
                          targets, ""]
            parts += ["Details, errors, shift response and costs: its section below.", ""]
        except (KeyError, TypeError, StopIteration, AttributeError, json.JSONDecodeError):
            continue
    for path in files:
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            parts += [f"## `{path.name}`", "", f"Unreadable: {exc}", ""]
            continue
        if not isinstance(result, dict):
            parts += [f"## `{path.name}`", "", "Not a JSON object; skipped.", ""]
            continue
        kind = str(result.get("benchmark", path.stem))
        parts += [f"## {kind} (`{path.name}`)", "", provenance(result), ""]
        render_fn = SECTIONS.get(kind, generic_section)
        try:
            parts.append(render_fn(kind, result))
        except (KeyError, TypeError, IndexError, StopIteration) as exc:
            parts.append(f"(unexpected layout for a `{kind}` result: {type(exc).__name__}: {exc}; raw values:)\n")
            parts.append(generic_section(kind, result))
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from eip_al.atomic import atomic_write_text

    atomic_write_text(args.out, render(args.results.resolve()))
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
