"""Choose the novelty reference quantile of eip_al/model/novelty.py on non-test data.

Loads the mock track's trained symmetric eIP of bench_uq.py (run `bench_uq.py --stage
compare --tracks mock` first), fits the feature novelty on the train split with each
reference quantile and scores σ on the valid (300 K) and select_ood (450 K) sets only:
pooled and within-element atom ROC-AUC, configuration Spearman, and the σ ratio vs error
ratio of 450 K over 300 K. The test sets are not read. → bench/results/uq_novelty_choice.json

    python bench/novelty_choice.py
"""

from __future__ import annotations

import json

import torch
from bench_uq import BASE_TRAIN, DATA, EIP_LOSS, RESULTS, evaluate, mock_set, run_label
from summarize import git_commit, machine_info, now_iso

import eip_al.model.novelty as novelty
from eip_al.atomic import atomic_write_text
from eip_al.model.checkpoint import load_checkpoint
from eip_al.model.evaluation import frames_to_graphs, predict_graphs

QUANTILES = (None, 0.5, 0.8, 0.95, 0.99)


def main() -> None:
    torch.set_num_threads(1)
    label = run_label({"q": EIP_LOSS.q, "lam": EIP_LOSS.lam, "w": EIP_LOSS.w_energy,
                       "lr": BASE_TRAIN.lr, "batch_size": BASE_TRAIN.batch_size})
    checkpoint = DATA / "models" / "mock" / f"eip-symmetric-{label}" / "model.pt"
    train, sets = mock_set("train"), {"valid": mock_set("valid"), "select_ood": mock_set("select_ood")}
    rows = {}
    for q in QUANTILES:
        model, _ = load_checkpoint(checkpoint, "cpu")
        if q is not None:
            novelty.REFERENCE_QUANTILE = q
            model.fit_novelty(frames_to_graphs(train, model))
        res = {name: evaluate(fr, predict_graphs(model, frames_to_graphs(fr, model)), bootstrap=2)
               for name, fr in sets.items()}
        v, s = res["valid"], res["select_ood"]
        rows["off" if q is None else f"{q:g}"] = {
            **{f"roc_auc_atom_{n}": r["roc_auc_atom"] for n, r in res.items()},
            **{f"roc_auc_{e}_{n}": x["roc_auc_atom"] for n, r in res.items() for e, x in r["by_element"].items()},
            "spearman_config_select_ood": s["spearman_config"],
            "sigma_ratio": s["sigma_mean"] / v["sigma_mean"], "error_ratio": s["error_mean"] / v["error_mean"],
        }
        print(q, rows["off" if q is None else f"{q:g}"], flush=True)
    out = {"benchmark": "uq_novelty_choice", "date": now_iso(), "git": git_commit(), "machine": machine_info(1),
           "checkpoint": str(checkpoint.relative_to(DATA)), "reference_quantile": rows}
    path = RESULTS / "uq_novelty_choice.json"
    atomic_write_text(path, json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
