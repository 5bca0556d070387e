"""``sigkiosk train online``: teacher → distilled student → float/int8 TFLite → golden vectors →
fusion fitted on validation writers (``tools/train/fusion_fit.py``) → run record. One command,
deterministic seeds.

Artefacts in the run folder (a new ``runs/online-<UTC time>/``, or ``--out``; copied into
``models/assets`` only by ``--ship``): ``tsgatr_student_int8.tflite`` (shipped to the
device), ``tsgatr_student_float.tflite`` and ``tsgatr_teacher_float.tflite`` (for the EER table),
``<model>.config.json`` (featurisation + normalisation prior), ``<model>.golden.npz``,
``fusion.json`` and ``fusion.fit.json`` (how the fusion was chosen), and ``tsgatr.run.json``
(command, configs, data hashes, figures). The teacher's Keras weights go to ``--work`` (not shipped).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.learned import LearnedConfig, config_path, load_config
from models.runtime import TFLiteModel
from models.tsgatr import TSGATRConfig, build_tsgatr
from tools.provenance import git_commit, invoked_command
from tools.train.augment import DeviceAugment, add_augmented, real_training_items
from tools.train.convert import device_model, to_tflite, write_golden
from tools.train.data import DEFAULT_SETS, InputCache, load_corpus
from tools.train.device_validation import validate_model
from tools.train.fusion_fit import refit
from tools.train.synthetic import SynthConfig, add_synthetic

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
log = logging.getLogger(__name__)

TEACHER = "tsgatr_teacher_float"
STUDENT_FLOAT = "tsgatr_student_float"
STUDENT_INT8 = "tsgatr_student_int8"


@dataclass(frozen=True)
class PipelineConfig:
    learned: LearnedConfig
    teacher: TSGATRConfig
    student: TSGATRConfig
    quick: bool = False
    max_writers: int | None = None
    representative: int = 200
    #: Pen sets (formats) the run does not see at all: a fold of the leave-one-set-out protocol,
    #: whose student is measured on the set it never saw (never shipped).
    leave_out: tuple[str, ...] = ()


def default_pipeline(quick: bool, k_nn: int = 16, k_step: int = 2) -> PipelineConfig:
    if quick:
        # Tiny everything: the quick run checks the pipeline end to end in about a minute.
        lc = LearnedConfig(max_len=32, k_nn=6, k_step=k_step)
        t = TSGATRConfig(max_len=32, width=16, att_dim=8, ffn=16, out_gru=16, emb_dim=8)
        s = TSGATRConfig(max_len=32, width=8, att_dim=8, ffn=8, out_gru=8, emb_dim=8)
        return PipelineConfig(lc, t, s, quick=True, max_writers=2, representative=8)
    lc = LearnedConfig(max_len=128, k_nn=k_nn, k_step=k_step)
    t = TSGATRConfig(max_len=128, width=64, att_dim=32, ffn=128, out_gru=64, emb_dim=32)
    s = TSGATRConfig(max_len=128, width=32, att_dim=16, ffn=64, out_gru=32, emb_dim=32)
    return PipelineConfig(lc, t, s)


class TFLiteEmbedder:
    """Embeds corpus signatures with a converted model through the device runtime."""

    def __init__(self, path: Path, inputs: InputCache) -> None:
        self.rt, self.inputs = TFLiteModel(path), inputs

    def __call__(self, idx: list[int]) -> list[np.ndarray]:
        out = []
        for i in idx:
            mi = self.inputs(i)
            out.append(self.rt.run(mi.arrays())[: mi.out_length].astype(np.float64))
        return out


def save_model(blob: bytes, out: Path, name: str, lc: LearnedConfig) -> Path:
    path = out / f"{name}.tflite"
    path.write_bytes(blob)
    config_path(path).write_text(json.dumps(lc.to_json(), indent=2) + "\n")
    return path


def run(pc: PipelineConfig, tcfg: Any, data_root: Path, out: Path, work: Path, teacher_weights: Path | None,
        skip_fusion: bool = False, synth: SynthConfig | None = None, augment_copies: int = 0,
        augment_cfg: DeviceAugment | None = None) -> dict:
    import tensorflow as tf

    from tools.train.loop import set_seeds
    from tools.train.trainer import (
        fit_prior,
        train_metric_model,
        validation_eer,
    )

    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    lc = pc.learned
    sets = tuple((rel, fmt) for rel, fmt in DEFAULT_SETS if fmt not in pc.leave_out)
    corpus = load_corpus(data_root, lc, sets=sets, cache_dir=work / "cache", max_writers=pc.max_writers)
    print(f"data: {len(corpus.signatures)} signatures; writers train {len(corpus.writers('train'))}, "
          f"validate {len(corpus.writers('validate'))}", flush=True)
    record_extra: dict = {}
    synth_items: list = []
    if synth is not None and synth.identities > 0:
        record_extra["synthetic"], synth_items = add_synthetic(corpus, synth, lc, work / "synth",
                                                               keep_trajectories=augment_copies > 0)
        print(f"synthetic: {record_extra['synthetic']}", flush=True)
    if augment_copies > 0:
        acfg = augment_cfg or DeviceAugment()
        n = add_augmented(corpus, real_training_items(corpus) + synth_items, augment_copies, acfg, lc, tcfg.seed)
        record_extra["device_augment"] = {"config": acfg.to_json(), "copies": augment_copies, "signatures": n,
                                          "p_augment": tcfg.p_augment, "seed": tcfg.seed}
        print(f"device augmentation: {n} augmented copies", flush=True)
    inputs = InputCache(corpus, lc)
    record: dict = {
        **record_extra,
        "command": invoked_command(),
        "git_commit": git_commit(),
        "data_sha256": corpus.hashes,
        "learned_config": lc.to_json(),
        "teacher_config": pc.teacher.to_json(),
        "student_config": pc.student.to_json(),
        "train_config": tcfg.to_json(),
        "tensorflow": tf.__version__,
        "left_out_sets": list(pc.leave_out),
    }

    # Teacher.
    if teacher_weights is not None:
        set_seeds(tcfg.seed)
        teacher = build_tsgatr(pc.teacher, name="teacher")
        teacher.load_weights(str(teacher_weights))
        record["teacher_weights"] = str(teacher_weights)
        print(f"teacher: loaded {teacher_weights}", flush=True)
    else:
        teacher, hist = train_metric_model(corpus, lc, pc.teacher, tcfg, desc="teacher")
        # Kept with the run too (never shipped): runs sharing a --work folder overwrite its copy,
        # and a student is distilled again from a chosen teacher with --teacher-weights.
        (out / "weights").mkdir(parents=True, exist_ok=True)
        for folder in (work, out / "weights"):
            teacher.save_weights(str(folder / "teacher.weights.h5"))
        record["teacher_history"] = hist.epochs
        record["teacher_best_epoch"] = hist.best_epoch

    # Student, distilled.
    student, shist = train_metric_model(corpus, lc, pc.student, tcfg, teacher=teacher, desc="student")
    student.save_weights(str(work / "student.weights.h5"))
    record["student_history"] = shist.epochs
    record["student_best_epoch"] = shist.best_epoch

    # Conversion. Priors are fitted per model on training writers, through the model itself.
    reps_rng = np.random.default_rng(tcfg.seed)
    train_idx = [i for i, s in enumerate(corpus.signatures) if s.split == "train"]
    reps = [inputs(int(i)) for i in reps_rng.choice(train_idx, size=min(pc.representative, len(train_idx)),
                                                    replace=False)]
    shipped: dict[str, Path] = {}
    for name, model, mcfg, rep in ((TEACHER, teacher, pc.teacher, None), (STUDENT_FLOAT, student, pc.student, None),
                                   (STUDENT_INT8, student, pc.student, reps)):
        t0 = time.perf_counter()
        blob = to_tflite(device_model(model, mcfg), rep)
        path = save_model(blob, out, name, lc)
        prior = fit_prior(TFLiteEmbedder(path, inputs), corpus, lc.band, n_writers=40)
        lc_m = replace(lc, prior=prior)
        config_path(path).write_text(json.dumps(lc_m.to_json(), indent=2) + "\n")
        shipped[name] = path
        print(f"converted {name}: {len(blob) / 1024:.0f} KiB in {time.perf_counter() - t0:.0f} s", flush=True)
    for name in (STUDENT_FLOAT, STUDENT_INT8):
        write_golden(shipped[name], lc)

    # Validation figures of every converted model through the device runtime.
    record["validation_skilled_eer_k5"] = {}
    for name, path in shipped.items():
        v = validation_eer(TFLiteEmbedder(path, inputs), corpus, lc, load_config(path).prior, trials=tcfg.val_trials)
        record["validation_skilled_eer_k5"][name] = v
        print(f"validation {name}: " + "  ".join(f"{k} {x:.2f}" for k, x in v.items()), flush=True)
    # The ablation's criterion: the yardstick's validation writers on every pad variant.
    cdv = validate_model(shipped[STUDENT_INT8], data_root, trials=1 if pc.quick else tcfg.val_trials,
                         max_writers=pc.max_writers)
    record["cross_device_validation"] = cdv
    print(f"cross-device validation {STUDENT_INT8}: mean {cdv['mean']:.2f} (as recorded {cdv['recorded_mean']:.2f})",
          flush=True)
    if not skip_fusion:
        # Validation writers only (every set, K = 1 and 5): see tools/train/fusion_fit.py.
        fit = refit(data_root, shipped[STUDENT_INT8], out, cache=work / "fusion", trials=1 if pc.quick else 10,
                    max_writers=3 if pc.quick else None)
        record["fusion"] = {k: fit[k] for k in ("method", "mix_learned", "weights", "bias", "threshold")}
        print(f"fusion: {record['fusion']}", flush=True)
    record["seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "tsgatr.run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record
