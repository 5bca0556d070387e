"""Tiny real ``.tflite`` models with golden vectors, for the model-update tests and benchmark.

    python -m tools.make_test_models tests/kiosk/update_models          # the committed fixtures
    python -m tools.make_test_models /tmp/big --big                     # + a ~4 MB model (benchmark)

Off-device only (needs tensorflow). Each model ``NAME.tflite`` comes with ``NAME.golden.npz``:
``input_0`` (cases x input shape) and ``output_0`` (cases x output shape), computed by running the
converted model in the device runtime (ai_edge_litert), so a correct model reproduces them exactly.

* ``dense_v1``: 16 -> 8 dense layer with tanh.  ``dense_v2``: the same shape, other weights.
* ``broken``: a model whose golden vectors were computed from *different* weights: it loads and
  runs, but fails its golden check - what a mis-built or mis-quantised model looks like.
* ``big`` (``--big``): a 512 -> 2048 dense stack (~4 MB of float weights), for the benchmark.
* ``noinput``: a valid model without inputs (a constant output), and ``spin``: one whose WHILE
  loop never ends for a positive input - signed bundles a review sent that failed the golden check
  by raising, or never finished it (``--hostile`` writes these two alone).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _convert(layers: list[tuple[int, str | None]], n_in: int, seed: int) -> bytes:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input(shape=(n_in,), batch_size=1, dtype=tf.float32)
    x = inp
    for units, act in layers:
        x = tf.keras.layers.Dense(units, activation=act)(x)
    model = tf.keras.Model(inp, x)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    return conv.convert()


def _golden(model_bytes: bytes, n_in: int, cases: int, seed: int) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(seed)
    interp = Interpreter(model_content=model_bytes)
    interp.allocate_tensors()
    i_det, o_det = interp.get_input_details()[0], interp.get_output_details()[0]
    xs = rng.standard_normal((cases, 1, n_in)).astype(np.float32)
    ys = []
    for x in xs:
        interp.set_tensor(i_det["index"], x)
        interp.invoke()
        ys.append(interp.get_tensor(o_det["index"]).copy())
    return {"input_0": xs, "output_0": np.stack(ys), "atol": np.asarray(1e-5, np.float32),
            "rtol": np.asarray(1e-4, np.float32)}


def write_model(out: Path, name: str, layers: list[tuple[int, str | None]], n_in: int, seed: int,
                golden_seed: int | None = None, cases: int = 4) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    content = _convert(layers, n_in, seed)
    # The golden vectors of the "broken" model come from another set of weights.
    gold_model = content if golden_seed is None else _convert(layers, n_in, golden_seed)
    (out / f"{name}.tflite").write_bytes(content)
    np.savez(out / f"{name}.golden.npz", allow_pickle=False, **_golden(gold_model, n_in, cases, seed + 1000))
    return out / f"{name}.tflite", out / f"{name}.golden.npz"


def write_hostile_models(out: Path) -> list[Path]:
    import tensorflow as tf

    class NoInput(tf.Module):
        def __init__(self) -> None:
            self.v = tf.Variable([[1.0, 2.0]])

        @tf.function(input_signature=[])
        def __call__(self):  # type: ignore[no-untyped-def]
            return tf.identity(self.v) * 2.0

    class Spin(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
        def __call__(self, x):  # type: ignore[no-untyped-def]
            return tf.while_loop(lambda v: v[0] > 0.0, lambda v: (v + 1.0,), (x,))[0]

    out.mkdir(parents=True, exist_ok=True)
    for name, module in (("noinput", NoInput()), ("spin", Spin())):
        conv = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
        (out / f"{name}.tflite").write_bytes(conv.convert())
    np.savez(out / "noinput.golden.npz", allow_pickle=False, output_0=np.array([[[2.0, 4.0]]], np.float32))
    np.savez(out / "spin.golden.npz", allow_pickle=False, input_0=np.array([[1.0]], np.float32),
             output_0=np.array([[1.0]], np.float32))
    return [out / f for f in ("noinput.tflite", "noinput.golden.npz", "spin.tflite", "spin.golden.npz")]


def write_models(out: Path, big: bool = False) -> list[Path]:
    out = Path(out)
    write_model(out, "dense_v1", [(8, "tanh")], 16, seed=1)
    write_model(out, "dense_v2", [(8, "tanh")], 16, seed=2)
    write_model(out, "broken", [(8, "tanh")], 16, seed=3, golden_seed=4)
    if big:
        write_model(out, "big", [(2048, "relu"), (8, None)], 512, seed=5)
    write_hostile_models(out)
    return sorted(out.glob("*"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--big", action="store_true", help="also write the ~4 MB benchmark model")
    p.add_argument("--hostile", action="store_true", help="write only the models without inputs and that never end")
    args = p.parse_args(argv)
    for f in (write_hostile_models(args.out) if args.hostile else write_models(args.out, args.big)):
        print(f"{f} ({f.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
