"""``sigkiosk train online``: train the TS-GATR teacher, distil the int8 student, fit the fusion.
``sigkiosk train offline``: the CNN-LSTM image embedding (float and int8)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the learned verifier (needs the 'train' extra: tensorflow)")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    o = kinds.add_parser("online", help="TS-GATR teacher, distilled int8 student, fusion with the classic DTW")
    o.add_argument("--data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    o.add_argument("--out", type=Path, default=Path("models/assets"), help="where the shipped artefacts go")
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
    o.set_defaults(func=run_online)

    f = kinds.add_parser("offline", help="CNN-LSTM image embedding (writer-independent), float and int8 TFLite")
    f.add_argument("--data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    f.add_argument("--out", type=Path, default=Path("models/assets"), help="where the shipped artefacts go")
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
    f.add_argument("--select-on", choices=("dutch", "dutch+rendered"), default=None,
                   help="model selection: Dutch validate writers' skilled EER (default), or its mean with that "
                        "of ink rendered from the online sets' validate writers")
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
    a.set_defaults(func=run_ablation)

    fu = kinds.add_parser("fusion", help="refit fusion.json on the validation writers (no retraining)")
    fu.add_argument("--data", type=Path, default=None)
    fu.add_argument("--model", type=Path, default=Path("models/assets/tsgatr_student_int8.tflite"),
                    help="the learned model the fusion serves (its .config.json beside it)")
    fu.add_argument("--out", type=Path, default=None, help="where fusion.json goes (default: beside the model)")
    fu.add_argument("--trials", type=int, default=10, help="random draws of K references per writer")
    fu.add_argument("--cache", type=Path, default=Path(".cache/fusion"), help="per-trial distance cache")
    fu.set_defaults(func=run_fusion)

    r = kinds.add_parser("report", help="the README's EER table: every verifier on the test writers, K=1 and 5")
    r.add_argument("--data", type=Path, default=None)
    r.add_argument("--assets", type=Path, default=Path("models/assets"))
    r.add_argument("--split", choices=("validate", "test"), default="test")
    r.add_argument("--trials", type=int, default=10)
    r.add_argument("--json", type=Path, default=None)
    r.set_defaults(func=run_report)


def run_online(args: argparse.Namespace) -> int:
    from tools.train.data import default_data_root
    from tools.train.pipeline import default_pipeline, run
    from tools.train.trainer import TrainConfig

    pc = default_pipeline(args.quick, k_nn=args.k_nn, k_step=args.k_step)
    t = TrainConfig(seed=args.seed)
    if args.quick:
        t = TrainConfig(seed=args.seed, epochs=1, steps_per_epoch=3, batch_writers=4, val_trials=1)
    if args.epochs is not None:
        t = TrainConfig(**{**t.to_json(), "epochs": args.epochs})
    for arg, key in (("steps", "steps_per_epoch"), ("patience", "patience"), ("batch_writers", "batch_writers")):
        if getattr(args, arg) is not None:
            t = TrainConfig(**{**t.to_json(), key: getattr(args, arg)})
    record = run(pc, t, args.data or default_data_root(), args.out, args.work, args.teacher_weights,
                 skip_fusion=args.no_fusion)
    print(f"done in {record['seconds']} s; record: {args.out / 'tsgatr.run.json'}")
    return 0


def run_offline(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from models.cnn_lstm import CnnLstmConfig
    from tools.train.data import default_data_root
    from tools.train.offline.data import DEFAULT_CACHE
    from tools.train.offline.pipeline import RECORD_NAME, quick_configs, run, score_models
    from tools.train.offline.trainer import OfflineTrainConfig

    if args.score:
        missing = [str(m) for m in args.score if not m.exists()]
        if missing:
            raise SystemExit(f"no such model: {', '.join(missing)}")
        import json

        figures = score_models(args.score, args.data or default_data_root(), args.cache or DEFAULT_CACHE,
                               select_on=args.select_on or "dutch")
        print(json.dumps(figures, indent=2))
        return 0
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
    record = run(args.data or default_data_root(), args.out, args.cache or DEFAULT_CACHE, net, cfg,
                 rendered=not args.no_rendered, max_writers=3 if args.quick else None,
                 representative=8 if args.quick else 200, synthetic=args.synthetic)
    print(f"done in {record['seconds']} s; record: {args.out / RECORD_NAME}")
    return 0


def run_ablation(args: argparse.Namespace) -> int:
    from tools.train.ablation import run_ablations

    run_ablations(args.data, args.work, args.epochs, args.steps, args.json, args.only)
    return 0


def run_fusion(args: argparse.Namespace) -> int:
    import json
    import sys

    from models.runtime import ModelError
    from tools.train.data import default_data_root
    from tools.train.fusion_fit import refit

    out = args.out or args.model.parent
    try:
        rec = refit(args.data or default_data_root(), args.model, out, args.cache, args.trials)
    except (ModelError, FileNotFoundError, ValueError) as e:
        print(f"sigkiosk train fusion: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: rec[k] for k in ("mix_learned", "best_mix_learned", "criterion_se", "weights", "bias",
                                          "threshold")}, indent=2))
    for name, g in rec["validation"].items():
        if g["fused"] is not None:
            print(f"validation {name:22s} skilled EER: classic {g['classic']:.2f}  learned {g['learned']:.2f}  "
                  f"fused {g['fused']:.2f}  ({g['writers_with_forgeries']} writer(s) with forgeries)")
    print(f"wrote {out / 'fusion.json'} and {out / 'fusion.fit.json'}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from tools.train.data import default_data_root
    from tools.train.report import write

    print(write(args.data or default_data_root(), args.assets, args.json, args.split, args.trials))
    return 0
