"""``sigkiosk train online``: train the TS-GATR teacher, distil the int8 student, fit the fusion.
``sigkiosk train offline``: the CNN-LSTM image embedding (float and int8).

Every run writes into a folder of its own (a new ``runs/<kind>-<UTC time>/`` unless ``--out``) and
replaces the shipped models only with ``--ship``, after its models passed their checks; a degenerate
model is reported loudly and the command exits with status 3 (``tools/train/runs.py``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

log = logging.getLogger(__name__)


def _run_options(p: argparse.ArgumentParser, kind: str) -> None:
    """Where a run writes and when it may replace the shipped models (``tools/train/runs.py``)."""
    p.add_argument("--out", type=Path, default=None,
                   help=f"the run's folder (default: a new runs/{kind}-<UTC time>/); never the shipped models")
    p.add_argument("--ship", action="store_true",
                   help="after the run passed its checks, copy its artefacts into the shipped models folder")
    p.add_argument("--assets", type=Path, default=None,
                   help="the shipped models folder --ship replaces (default: the installed models/assets)")
    p.add_argument("--max-eer", type=float, default=None, metavar="PCT",
                   help="a validation skilled-forgery EER at or above PCT %% fails the run as degenerate "
                        "(default 40; chance is 50)")


def register(sub: argparse._SubParsersAction) -> None:
    from tools.train.offline import SELECT_CHOICES

    p = sub.add_parser("train", help="train the learned verifier (needs the 'train' extra: tensorflow)")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    o = kinds.add_parser("online", help="TS-GATR teacher, distilled int8 student, fusion with the classic DTW")
    o.add_argument("--data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    _run_options(o, "online")
    o.add_argument("--work", type=Path, default=Path(".cache/learned"), help="feature cache and Keras weights")
    o.add_argument("--quick", action="store_true", help="tiny models and data: the pipeline end to end in ~1 min")
    o.add_argument("--epochs", type=int, default=None)
    o.add_argument("--steps", type=int, default=None, help="steps per epoch")
    o.add_argument("--patience", type=int, default=None, help="epochs without a better validation EER before stopping")
    o.add_argument("--batch-writers", type=int, default=None, help="writers (triplets) per batch")
    o.add_argument("--k-nn", type=int, default=16)
    o.add_argument("--k-step", type=int, default=2)
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--teacher-weights", type=Path, default=None, help="skip teacher training: load these weights")
    o.add_argument("--no-fusion", action="store_true", help="do not fit fusion.json")
    o.add_argument("--leave-out", nargs="+", default=[], metavar="SET",
                   help="pen sets the run does not see (a fold of the leave-one-set-out protocol: implies "
                        "--no-fusion, never shipped): susig-visual susig-blind sigcomp2009-nfi sigwicomp2013-jp")
    syn = o.add_argument_group("real + synthetic (sigma-lognormal identities, device augmentation)")
    syn.add_argument("--synthetic-identities", type=int, default=0, metavar="N",
                     help="fit N real training signatures with the sigma-lognormal model; each becomes an identity")
    syn.add_argument("--synthetic-duplicates", type=int, default=6, metavar="N",
                     help="genuine-like duplicates drawn per synthetic identity")
    syn.add_argument("--forgery-like", type=int, default=0, metavar="N",
                     help="forgery-like samples drawn per synthetic identity (slower, hesitant, more pen-ups)")
    syn.add_argument("--p-synthetic", type=float, default=0.5, metavar="P",
                     help="share of training triplets taken from synthetic identities")
    syn.add_argument("--synthesis-seed", type=int, default=0)
    syn.add_argument("--device-augment", type=float, default=0.0, metavar="P",
                     help="replace each training signature by a device-augmented copy with probability P")
    syn.add_argument("--augment-copies", type=int, default=2, metavar="N",
                     help="device-augmented copies prepared per training signature (with --device-augment)")
    o.set_defaults(func=run_online)

    sh = kinds.add_parser("synth-sheet", help="fit real signatures with the sigma-lognormal model: a PNG sheet of "
                                              "originals, fits, duplicates and forgery-likes, and the SNR summary")
    sh.add_argument("--data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    sh.add_argument("--out", type=Path, default=None, help="the run's folder (default: a new runs/synth-<UTC time>/)")
    sh.add_argument("--per-set", type=int, default=3, help="training signatures fitted per pen set")
    sh.add_argument("--duplicates", type=int, default=3)
    sh.add_argument("--forgery-like", type=int, default=2)
    sh.add_argument("--seed", type=int, default=0)
    sh.add_argument("--sets", nargs="+", default=None, metavar="SET",
                    help="only these pen sets (default all: susig-visual susig-blind sigcomp2009-nfi sigwicomp2013-jp)")
    sh.set_defaults(func=run_synth_sheet)

    fi = kinds.add_parser("fit-identities", help="sigma-lognormal fits of N training signatures into the work "
                                                 "folder's cache (what --synthetic-identities N reads), or an export "
                                                 "of them to fit on a machine with more cores")
    fi.add_argument("identities", type=int, metavar="N")
    fi.add_argument("--data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    fi.add_argument("--work", type=Path, default=Path(".cache/learned"), help="as `train online --work`")
    fi.add_argument("--synthesis-seed", type=int, default=0)
    fi.add_argument("--workers", type=int, default=2)
    fi.add_argument("--export", type=Path, default=None, metavar="FILE",
                    help="do not fit: write the signatures still to fit to FILE, for "
                         "`python -m tools.train.synthetic FILE OUT_DIR` elsewhere; append OUT_DIR's .jsonl to "
                         "WORK/synth/ of the same name to use the fits")
    fi.set_defaults(func=run_fit_identities)

    dv = kinds.add_parser("validate-devices", help="converted pen models on the cross-device yardstick's validation "
                                                   "writers: skilled EER K=5 per set and pad variant (the selection "
                                                   "criterion of real + synthetic training)")
    dv.add_argument("models", type=Path, nargs="+", metavar="MODEL", help="converted .tflite models")
    dv.add_argument("--data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    dv.add_argument("--trials", type=int, default=3)
    dv.add_argument("--json", type=Path, default=None)
    dv.set_defaults(func=run_validate_devices)

    f = kinds.add_parser("offline", help="CNN-LSTM image embedding (writer-independent), float and int8 TFLite")
    f.add_argument("--data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    _run_options(f, "offline")
    f.add_argument("--cache", type=Path, default=None,
                   help="prepared-image cache, outside the repository (default ~/.cache/sigkiosk/offline)")
    f.add_argument("--quick", action="store_true", help="tiny model, a few writers: end to end in about a minute")
    f.add_argument("--epochs", type=int, default=None)
    f.add_argument("--steps", type=int, default=None, help="steps per epoch")
    f.add_argument("--patience", type=int, default=None, help="epochs without a better validation EER before stopping")
    f.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                   help="stop training after MIN minutes (the best epoch so far is kept)")
    f.add_argument("--lr-decay", action="store_true", help="cosine learning-rate decay over all epochs")
    f.add_argument("--dropout", type=float, default=None, help="dropout on the column features (training only)")
    f.add_argument("--no-rendered", action="store_true", help="scans only: no ink rendered from the online sets")
    f.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="add N synthetic sigma-lognormal writers (8 genuine + 2 skilled forgeries each) as "
                        "training ink")
    f.add_argument("--blur", type=float, default=None, metavar="P",
                   help="probability of a blur + re-threshold augmentation (another scanner or pen)")
    f.add_argument("--filters", type=int, nargs="+", default=None, help="convolution widths, e.g. 32 48 64 96")
    f.add_argument("--width", type=int, default=None, help="column projection and LSTM units")
    f.add_argument("--no-cross-media", action="store_true",
                   help="no cross-media training identities (its validate writers are read only to select on)")
    f.add_argument("--same-name", type=int, default=None, metavar="N",
                   help="cross-media identities of one same name in each batch (default 6; 0: none together)")
    f.add_argument("--scans-per-batch", type=int, default=None, metavar="N",
                   help="of the writers in each batch, at least N with real scans (the Dutch training "
                        "writers; default 0: drawn like the rest, about 2 of 12)")
    f.add_argument("--select-on", choices=SELECT_CHOICES, default=None,
                   help="model selection: Dutch validate writers' skilled EER (default), or its mean with the "
                        "cross-media validate writers' pad-to-paper skilled EER and/or that of ink rendered from "
                        "the online sets' validate writers")
    f.add_argument("--score", type=Path, nargs="+", default=None, metavar="MODEL",
                   help="no training: print the selection figures of these converted models (e.g. the shipped ones)")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=run_offline)

    a = kinds.add_parser("ablation", help="seed ablations on validation writers (GRU/graphs, k of k-NN, k-step)")
    a.add_argument("--data", type=Path, default=None)
    a.add_argument("--work", type=Path, default=Path(".cache/learned"))
    a.add_argument("--epochs", type=int, default=4)
    a.add_argument("--steps", type=int, default=60)
    a.add_argument("--json", type=Path, default=None)
    a.add_argument("--only", nargs="*", default=None, help="names of the variants to run")
    a.add_argument("--data-variants", action="store_true",
                   help="issue 13's data ablation instead: real only / + duplicates / + forgery-like / + device "
                        "augmentation, on the cross-device validation writers")
    a.add_argument("--batch-writers", type=int, default=16, help="with --data-variants: writers per batch")
    a.add_argument("--synthetic-identities", type=int, default=200, help="with --data-variants: fitted identities")
    a.set_defaults(func=run_ablation)

    fu = kinds.add_parser("fusion", help="refit fusion.json and fused_score.json on the validation writers (no "
                                          "retraining)")
    fu.add_argument("--data", type=Path, default=None)
    fu.add_argument("--model", type=Path, default=None,
                    help="the learned model the fusion serves, its .config.json beside it (default: the shipped "
                         "tsgatr_student_int8.tflite)")
    _run_options(fu, "fusion")
    fu.add_argument("--trials", type=int, default=10, help="random draws of K references per writer")
    fu.add_argument("--cache", type=Path, default=Path(".cache/fusion"), help="per-trial distance cache")
    fu.add_argument("--fold-model", action="append", default=[], metavar="SET=MODEL",
                    help="choose on the cross-device protocol: for every pen set, the student trained without it "
                         "(`train online --leave-out SET`) measures that set's validation writers (all four sets)")
    fu.set_defaults(func=run_fusion)

    ft = kinds.add_parser("fusion-transfer", help="each pen set left out in turn: the fusion fitted on the other "
                                                  "sets' validation writers, measured on its test writers (EERs; "
                                                  "FRR / skilled FAR at the fold's and at the shipped threshold)")
    ft.add_argument("--data", type=Path, default=None)
    ft.add_argument("--model", type=Path, default=None, help="the learned model (default: the shipped int8 student)")
    ft.add_argument("--fusion", type=Path, default=None, help="the shipped fusion to compare (default: "
                                                              "fusion.json beside the model)")
    ft.add_argument("--trials", type=int, default=10, help="random draws of K references per writer")
    ft.add_argument("--cache", type=Path, default=Path(".cache/fusion"), help="per-trial distance cache")
    ft.add_argument("--json", type=Path, default=None)
    ft.add_argument("--split", choices=("test", "validate"), default="test",
                    help="the left-out set's writers measured (validate: where verifier choices are made)")
    ft.add_argument("--fused-score", action="store_true",
                    help="also the fused score (the match score with the learned distance) per fold: the match "
                         "score refitted without the set, the fold's mix, the left-out set's test writers")
    ft.add_argument("--fold-model", action="append", default=[], metavar="SET=MODEL",
                    help="with --fused-score: the student of the fold that leaves SET out (`train online "
                         "--leave-out SET`); only those sets are measured, each with its own student")
    ft.add_argument("--variants", nargs="+", default=["recorded"], metavar="PAD",
                    help="with --fused-score: the pads the left-out set is measured as (tools.cross_device "
                         "VARIANTS: recorded no-pressure no-time 75hz 200hz; default: recorded)")
    ft.set_defaults(func=run_fusion_transfer)

    r = kinds.add_parser("report", help="the README's EER table: every verifier on the test writers, K=1 and 5")
    r.add_argument("--data", type=Path, default=None)
    r.add_argument("--assets", type=Path, default=Path("models/assets"))
    r.add_argument("--split", choices=("validate", "test"), default="test")
    r.add_argument("--trials", type=int, default=10)
    r.add_argument("--json", type=Path, default=None)
    r.set_defaults(func=run_report)


def _start(args: argparse.Namespace, kind: str) -> tuple[Path, Path]:
    """The run's folder (new by default) and the shipped models folder; TensorFlow quiet unless -v."""
    from models import shipped_assets
    from tools.train.runs import output_dir, quiet_tensorflow

    assets = args.assets or shipped_assets()
    out = output_dir(args.out, kind, assets)
    quiet_tensorflow(getattr(args, "verbose", 0))
    return out, assets


def _finish(args: argparse.Namespace, out: Path, assets: Path, record_name: str, record: dict,
            eers: Mapping[str, float], models: Iterable[Path], artefacts: Iterable[str]) -> int:
    """Check the run's models, record the checks, and ship the artefacts only when asked and passed."""
    import json

    from tools.train.runs import (
        DEFAULT_MAX_EER,
        EXIT_DEGENERATE,
        golden_outputs,
        model_problems,
        ship,
        warn_degenerate,
    )

    max_eer = DEFAULT_MAX_EER if args.max_eer is None else args.max_eer
    problems = model_problems(eers, max_eer, golden_outputs(models))
    from tools.provenance import model_hashes

    artefacts = list(artefacts)
    record["checks"] = {"max_eer": max_eer, "validation_skilled_eer": dict(eers), "problems": problems,
                        "passed": not problems}
    # Names, not paths: the same hashes hold in the run folder and, once shipped, in the assets.
    record["artefacts_sha256"] = {Path(k).name: v for k, v in
                                  model_hashes(out / a for a in artefacts if a != record_name).items()}
    if args.ship and not problems:
        record["shipped_to"] = str(assets)
    (out / record_name).write_text(json.dumps(record, indent=2, default=str) + "\n")
    if problems:
        warn_degenerate(problems, out, args.ship)
        return EXIT_DEGENERATE
    if args.ship:
        shipped = ship(out, artefacts, assets)
        print(f"shipped {len(shipped)} file(s) from {out} to {assets}")
    else:
        print(f"the shipped models in {assets} are unchanged; add --ship to replace them with this run's")
    return 0


def _refused(e: Exception) -> int:
    print(f"sigkiosk train: {e}", file=sys.stderr)
    return 2


def run_online(args: argparse.Namespace) -> int:
    from tools.train.runs import RunError

    # Refused before anything is written (no run folder for a command that will not run).
    for name in ("synthetic_identities", "synthetic_duplicates", "forgery_like", "augment_copies"):
        if getattr(args, name) < 0:
            return _refused(ValueError(f"--{name.replace('_', '-')} must be >= 0"))
    for name in ("p_synthetic", "device_augment"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            return _refused(ValueError(f"--{name.replace('_', '-')} must be in 0..1"))
    from tools.train.data import DEFAULT_SETS

    unknown = set(args.leave_out) - {fmt for _, fmt in DEFAULT_SETS}
    if unknown:
        return _refused(ValueError(f"--leave-out: unknown set(s) {sorted(unknown)}"))
    if args.leave_out and args.ship:
        return _refused(ValueError("--leave-out: a fold's model is measured, never shipped (no --ship)"))
    try:
        out, assets = _start(args, "online")
    except RunError as e:
        return _refused(e)
    from tools.train.data import default_data_root
    from tools.train.pipeline import STUDENT_FLOAT, STUDENT_INT8, TEACHER, default_pipeline, run
    from tools.train.synthetic import SynthConfig
    from tools.train.trainer import TrainConfig

    pc = replace(default_pipeline(args.quick, k_nn=args.k_nn, k_step=args.k_step), leave_out=tuple(args.leave_out))
    t = TrainConfig(seed=args.seed)
    if args.quick:
        t = TrainConfig(seed=args.seed, epochs=1, steps_per_epoch=3, batch_writers=4, val_trials=1)
    if args.epochs is not None:
        t = TrainConfig(**{**t.to_json(), "epochs": args.epochs})
    for arg, key in (("steps", "steps_per_epoch"), ("patience", "patience"), ("batch_writers", "batch_writers")):
        if getattr(args, arg) is not None:
            t = TrainConfig(**{**t.to_json(), key: getattr(args, arg)})
    synth = SynthConfig(identities=args.synthetic_identities, duplicates=args.synthetic_duplicates,
                        forgery_like=args.forgery_like, seed=args.synthesis_seed)
    if synth.identities > 0:
        t = TrainConfig(**{**t.to_json(), "p_synthetic": args.p_synthetic})
    if args.device_augment > 0:
        t = TrainConfig(**{**t.to_json(), "p_augment": args.device_augment})
    print(f"run folder: {out}", flush=True)
    # A fold's run sees some sets only; the fusion is fitted on every set's validation writers.
    skip_fusion = args.no_fusion or bool(args.leave_out)
    record = run(pc, t, args.data or default_data_root(), out, args.work, args.teacher_weights,
                 skip_fusion=skip_fusion, synth=synth,
                 augment_copies=args.augment_copies if args.device_augment > 0 else 0)
    print(f"done in {record['seconds']} s; record: {out / 'tsgatr.run.json'}")
    names = (TEACHER, STUDENT_FLOAT, STUDENT_INT8)
    artefacts = [f"{n}{ext}" for n in names for ext in (".tflite", ".config.json", ".golden.npz")
                 if (out / f"{n}{ext}").exists()]
    if not skip_fusion:
        artefacts += ["fusion.json", "fused_score.json", "fusion.fit.json"]
    eers = {n: v["mean"] for n, v in record["validation_skilled_eer_k5"].items()}
    return _finish(args, out, assets, "tsgatr.run.json", record, eers, [out / f"{n}.tflite" for n in names],
                   artefacts + ["tsgatr.run.json"])


def run_synth_sheet(args: argparse.Namespace) -> int:
    from models import shipped_assets
    from tools.train.data import default_data_root
    from tools.train.runs import RunError, output_dir
    from tools.train.synth_sheet import make_sheet

    try:
        out = output_dir(args.out, "synth", shipped_assets())
    except RunError as e:
        return _refused(e)
    try:
        record = make_sheet(args.data or default_data_root(), out, per_set=args.per_set, duplicates=args.duplicates,
                            forgery_like=args.forgery_like, seed=args.seed,
                            sets=tuple(args.sets) if args.sets else None)
    except ValueError as e:
        return _refused(e)
    s = record["snr"]
    print(f"{record['fitted']} signatures fitted: velocity SNR median {s['velocity_db']['median']:.1f} dB "
          f"(min {s['velocity_db']['min']:.1f}), trajectory SNR median {s['trajectory_db']['median']:.1f} dB; "
          f"sheet {out / 'synth_sheet.png'}, record {out / 'synth.run.json'}")
    return 0


def run_fit_identities(args: argparse.Namespace) -> int:
    from models.learned import LearnedConfig
    from tools.train.data import default_data_root, load_corpus
    from tools.train.synthetic import SynthConfig, export_fits, fitted_identities, snr_summary

    corpus = load_corpus(args.data or default_data_root(), LearnedConfig(), cache_dir=args.work / "cache")
    if args.export is not None:
        n = export_fits(corpus, args.identities, args.synthesis_seed, args.work / "synth", args.export)
        print(f"{n} signatures to fit written to {args.export}")
        return 0
    fits = fitted_identities(corpus, args.identities, args.synthesis_seed, args.work / "synth", args.workers)
    print(json.dumps(snr_summary(fits, SynthConfig().min_snr_db), indent=1))
    return 0


def run_validate_devices(args: argparse.Namespace) -> int:
    from tools.train.data import default_data_root
    from tools.train.device_validation import main

    missing = [str(m) for m in args.models if not m.exists()]
    if missing:
        return _refused(FileNotFoundError(f"no such model: {', '.join(missing)}"))
    main(args.models, args.data or default_data_root(), args.trials, args.json)
    return 0


def run_offline(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from models.cnn_lstm import CnnLstmConfig
    from tools.train.data import default_data_root
    from tools.train.offline.data import DEFAULT_CACHE
    from tools.train.offline.pipeline import RECORD_NAME, quick_configs, run, score_models
    from tools.train.offline.trainer import OfflineTrainConfig
    from tools.train.runs import RunError

    if args.score:
        missing = [str(m) for m in args.score if not m.exists()]
        if missing:
            raise SystemExit(f"no such model: {', '.join(missing)}")
        import json

        figures = score_models(args.score, args.data or default_data_root(), args.cache or DEFAULT_CACHE,
                               select_on=args.select_on or "dutch")
        print(json.dumps(figures, indent=2))
        return 0
    try:
        out, assets = _start(args, "offline")
    except RunError as e:
        return _refused(e)
    net, cfg = quick_configs(args.seed) if args.quick else (CnnLstmConfig(), OfflineTrainConfig(seed=args.seed))
    for arg, key in (("epochs", "epochs"), ("steps", "steps_per_epoch"), ("patience", "patience"),
                     ("time_budget", "time_budget_min")):
        if getattr(args, arg) is not None:
            cfg = replace(cfg, **{key: getattr(args, arg)})
    if args.lr_decay:
        cfg = replace(cfg, lr_decay=True)
    if args.dropout is not None:
        net = replace(net, dropout=args.dropout)
    if args.filters:
        net = replace(net, filters=tuple(args.filters))
    if args.width is not None:
        net = replace(net, column_dim=args.width, lstm_units=args.width)
    if args.blur is not None:
        cfg = replace(cfg, p_blur=args.blur)
    if args.select_on is not None:
        cfg = replace(cfg, select_on=args.select_on)
    if args.same_name is not None:
        cfg = replace(cfg, same_name_per_batch=args.same_name)
    if args.scans_per_batch is not None:
        cfg = replace(cfg, scans_per_batch=args.scans_per_batch)
    print(f"run folder: {out}", flush=True)
    record = run(args.data or default_data_root(), out, args.cache or DEFAULT_CACHE, net, cfg,
                 rendered=not args.no_rendered, max_writers=3 if args.quick else None,
                 representative=8 if args.quick else 200, synthetic=args.synthetic,
                 cross_media=not args.no_cross_media)
    print(f"done in {record['seconds']} s; record: {out / RECORD_NAME}")
    names = list(record["models"])
    eers = {n: m["validation"]["skilled_eer_global"] for n, m in record["models"].items()}
    artefacts = [f"{n}{ext}" for n in names for ext in (".tflite", ".config.json", ".golden.npz")]
    return _finish(args, out, assets, RECORD_NAME, record, eers, [out / f"{n}.tflite" for n in names],
                   artefacts + [RECORD_NAME])


def run_ablation(args: argparse.Namespace) -> int:
    from tools.train.ablation import run_ablations, run_data_ablations

    if args.data_variants:
        run_data_ablations(args.data, args.work, args.epochs, args.steps, args.batch_writers,
                           args.synthetic_identities, args.json, args.only)
        return 0
    run_ablations(args.data, args.work, args.epochs, args.steps, args.json, args.only)
    return 0


def run_fusion(args: argparse.Namespace) -> int:
    import json

    from models._assets import DEFAULT_LEARNED_MODEL
    from models.runtime import ModelError
    from tools.train.data import default_data_root
    from tools.train.fusion_fit import refit
    from tools.train.runs import RunError

    try:
        out, assets = _start(args, "fusion")
    except RunError as e:
        return _refused(e)
    model = args.model or assets / DEFAULT_LEARNED_MODEL
    if args.ship and model.resolve().parent != assets.resolve():
        return _refused(RunError(f"--ship: the fusion would serve {model}, not the shipped model in {assets}"))
    try:
        rec = refit(args.data or default_data_root(), model, out, args.cache, args.trials,
                    fold_models=dict(_fold_model(a) for a in args.fold_model) or None)
    except (ModelError, FileNotFoundError, ValueError) as e:
        if args.out is None and not any(out.iterdir()):
            out.rmdir()  # the run folder it made for nothing
        return _refused(e)
    print(json.dumps({k: rec[k] for k in ("mix_learned", "best_mix_learned", "criterion_se", "weights", "bias",
                                          "threshold")}, indent=2))
    fused = []
    for name, g in rec["validation"].items():
        if g["fused"] is not None:
            fused.append(g["fused"])
            print(f"validation {name:22s} skilled EER: classic {g['classic']:.2f}  learned {g['learned']:.2f}  "
                  f"fused {g['fused']:.2f}  ({g['writers_with_forgeries']} writer(s) with forgeries)")
    fs = rec["fused_score"]
    for name, g in fs["validation_skilled_eer"].items():
        if g["fused_score"] is not None:
            print(f"validation {name + ' K=5':22s} skilled EER: match score {g['match_score']:.2f}  "
                  f"fused score (match score + learned) {g['fused_score']:.2f}")
    print(f"chosen on {rec['chosen_on']}")
    print(f"fused score: learned mixed in at {fs['mix_learned']}, threshold {fs['threshold']:.4f}")
    print(f"wrote {out / 'fusion.json'}, {out / 'fused_score.json'} and {out / 'fusion.fit.json'}")
    eers = {"fusion": sum(fused) / len(fused) if fused else float("nan")}
    return _finish(args, out, assets, "fusion.fit.json", rec, eers, [],
                   ["fusion.json", "fused_score.json", "fusion.fit.json"])


def run_fusion_transfer(args: argparse.Namespace) -> int:
    from models._assets import DEFAULT_LEARNED_MODEL, FUSION_FILE, shipped_assets
    from models.fusion import Fusion
    from tools.train.data import default_data_root
    from tools.train.fusion_transfer import format_table, leave_one_set_out

    model = args.model or shipped_assets() / DEFAULT_LEARNED_MODEL
    shipped = Fusion.load(args.fusion or model.parent / FUSION_FILE)
    report = leave_one_set_out(args.data or default_data_root(), model, shipped, args.cache, args.trials,
                               split=args.split)
    print(format_table(report))
    if args.fused_score:
        from tools.train.fusion_transfer import format_fused_table, fused_score_rows

        report["fused_score"] = fused_score_rows(args.data or default_data_root(), model, args.cache, args.trials,
                                                 say=lambda msg: print(msg, file=sys.stderr, flush=True),
                                                 variants=tuple(args.variants), split=args.split,
                                                 fold_models=dict(_fold_model(a) for a in args.fold_model) or None)
        print(format_fused_table(report["fused_score"]))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _fold_model(arg: str) -> tuple[str, Path]:
    name, sep, path = arg.partition("=")
    if not sep or not name or not path:
        raise SystemExit(f"sigkiosk train: --fold-model {arg!r}: expected SET=MODEL")
    return name, Path(path)


def run_report(args: argparse.Namespace) -> int:
    from tools.train.data import default_data_root
    from tools.train.report import write

    print(write(args.data or default_data_root(), args.assets, args.json, args.split, args.trials))
    return 0
