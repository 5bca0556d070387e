"""The README's EER table: every verifier on the shared *test* writers, K = 1 and 5.

Rows: classic, float teacher, float student, int8 student, fused (the match score with the int8
student's distance). Columns:
SUSIG-Visual (cross-session: enrol on session 1, question session 2), SUSIG-Blind, NFI; skilled
forgeries, global threshold, the evaluator's ``random-refs`` protocol. Nothing here is tuned: the
models, priors and fusion were fitted on training/validation writers only.
"""

from __future__ import annotations

import json
from pathlib import Path

from tools.datasets import load_online
from tools.evaluate import verifier_setup

SETS: tuple[tuple[str, str, str], ...] = (
    ("SUSIG-Visual (cross-session)", "online/susig/VisualSubCorpus", "susig-visual"),
    ("SUSIG-Blind", "online/susig/BlindSubCorpus", "susig-blind"),
    ("NFI", "online/sigcomp2009-nfi", "sigcomp2009-nfi"),
)


def rows(assets: Path) -> list[tuple[str, str, Path]]:
    return [
        ("classic DTW", "classic", assets / "tsgatr_student_int8.tflite"),
        ("TS-GATR teacher (float)", "learned", assets / "tsgatr_teacher_float.tflite"),
        ("student (float)", "learned", assets / "tsgatr_student_float.tflite"),
        ("student (int8)", "learned", assets / "tsgatr_student_int8.tflite"),
        ("fused: match score + int8 student", "fused", assets / "tsgatr_student_int8.tflite"),
    ]


def make_table(data_root: Path, assets: Path, split: str = "test", trials: int = 10,
               ks: tuple[int, ...] = (1, 5)) -> tuple[str, dict]:
    datasets = {fmt: load_online(data_root / rel, fmt).subset(split) for _, rel, fmt in SETS}  # type: ignore[arg-type]
    figures: dict = {}
    for label, verifier, model in rows(assets):
        setup = verifier_setup(verifier, model)
        for k in ks:
            for name, _, fmt in SETS:
                rep = setup.evaluate(datasets[fmt], verifier, references=k, trials=trials).report
                figures.setdefault(label, {})[f"{name} K={k}"] = rep["skilled"]["eer_global"]
                print(f"{label:32s} {name:30s} K={k}: skilled EER {rep['skilled']['eer_global']:.2f} %", flush=True)
    cols = [f"{name} K={k}" for k in ks for name, _, _ in SETS]
    head = "| verifier | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols) + "\n"
    body = "".join(
        f"| {label} | " + " | ".join(f"{figures[label][c]:.2f}" for c in cols) + " |\n" for label in figures
    )
    return head + body, figures


def write(data_root: Path, assets: Path, out: Path | None, split: str, trials: int) -> str:
    table, figures = make_table(data_root, assets, split, trials)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"split": split, "trials": trials, "skilled_eer_global": figures}, indent=2) + "\n")
    return table
