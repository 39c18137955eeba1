"""The phone-in-hand classifier on LiteRT (``ai-edge-litert``; ``tflite-runtime`` as fallback).

The interpreter is built once. Quantisation parameters are read from the model's tensors;
everything else about feeding and reading it (size, layout, colour, normalisation, labels,
which labels mean "phone", threshold) comes from the validated sidecar JSON next to the model.

Accelerators: ``cpu``; ``edgetpu`` loads the ``*_edgetpu.tflite`` twin through the
``libedgetpu.so.1`` delegate and fails clearly without it; ``auto`` tries the Edge TPU and
falls back to the CPU, saying so in the log and in ``.accelerator``.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.errors import AcceleratorError, ModelError
from edge.core.model_spec import ModelSpec, load_spec, sidecar_path
from edge.core.preprocess import InputSpec, dequantise, preprocess_quantised, to_layout

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"

BATCH_CACHE = 4
"""Batch sizes :meth:`LiteRTClassifier.score_batch` keeps an interpreter for (least recently
used dropped first): alternating sizes, as with several cameras, never rebuild one per call."""

BATCH_SIZES = (16, 8, 4, 2)
"""The batch sizes ``score_batch`` invokes: any other count is split into these (and a single
crop), largest first: 12 crops go as 8 + 4. Several cameras' rounds come in every size from 2
to twice the cameras; without this each new size built an interpreter and, past
``BATCH_CACHE`` sizes, dropped one that the next round rebuilt."""


def _runtime() -> tuple[Any, Callable[..., Any], str]:
    """(Interpreter class, load_delegate, runtime name): LiteRT first, tflite-runtime second."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import (
            Interpreter,
            load_delegate,
        )

        return Interpreter, load_delegate, "tflite-runtime"
    except ImportError:
        raise ModelError(
            "no TFLite runtime is installed: pip install ai-edge-litert (into the unit's venv; "
            "PyPI has aarch64 wheels for Python 3.11 to 3.13, manylinux_2_27, so Raspberry Pi OS "
            "Bookworm and Trixie both take one). Neither Debian nor Raspberry Pi OS packages a "
            "TFLite runtime (no python3-tflite-runtime or python3-litert in apt), and the older "
            "tflite-runtime wheel stops at Python 3.11"
        ) from None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def batch_chunks(n: int) -> list[int]:
    """``n`` crops as batches of :data:`BATCH_SIZES`, largest first, and single crops:
    ``batch_chunks(12) == [8, 4]``, ``batch_chunks(7) == [4, 2, 1]``."""
    out: list[int] = []
    for size in BATCH_SIZES:
        while n >= size:
            out.append(size)
            n -= size
    return out + [1] * n


def check_input_shape(
    model_path: Path, shape: Any, s: InputSpec, sidecar: str = "the sidecar"
) -> None:
    """:class:`ModelError` unless the model's input tensor is the one-image shape the
    sidecar's input (size, channels, layout) means."""
    got = tuple(int(x) for x in shape)
    want = (
        (1, s.height, s.width, s.channels)
        if s.layout == "NHWC"
        else (1, s.channels, s.height, s.width)
    )
    if got != want:
        raise ModelError(
            f"{model_path}: model input shape {list(got)} does not match {sidecar} "
            f"({s.layout}, {s.width}x{s.height}, {s.colour}) which means {list(want)}"
        )


def checked_sha256(
    model_path: Path, spec_path: Path, expected: str | None, accelerator: str
) -> str:
    """The model file's SHA-256, after checking it against the one its sidecar names (if
    any) and that ``accelerator`` is one the unit knows; :class:`ModelError` says which."""
    sha = file_sha256(model_path)
    if expected is not None and expected != sha:
        raise ModelError(
            f"{model_path} does not match its sidecar {spec_path}: sha256 is {sha[:12]}..., "
            f"the sidecar says {expected[:12]}... (wrong file, or a changed model)"
        )
    if accelerator not in ("auto", "cpu", "edgetpu"):
        raise ModelError(f"accelerator must be auto, cpu or edgetpu, not {accelerator!r}")
    return sha


def edgetpu_twin(model_path: Path) -> Path:
    """``x.tflite`` -> ``x_edgetpu.tflite`` (a path that is already a twin is returned as is)."""
    if model_path.stem.endswith("_edgetpu"):
        return model_path
    return model_path.with_name(model_path.stem + "_edgetpu" + model_path.suffix)


def _explain_load_error(path: Path, e: Exception) -> ModelError:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "edgetpu-custom-op" in str(e):
        return AcceleratorError(
            f"{path} needs the Edge TPU: it was compiled for a Coral (edgetpu-custom-op) and "
            "cannot run on the CPU. Use the CPU model it was compiled from, or accelerator = "
            '"edgetpu" on a unit with a Coral and libedgetpu installed.'
        )
    if "unresolved custom op" in str(e).lower():
        return ModelError(
            f"{path} cannot be loaded: it uses an operator this runtime lacks ({msg})"
        )
    return ModelError(f"{path} is not a loadable TFLite model: {msg}")


@dataclass(frozen=True)
class LoadedModel:
    """An allocated interpreter and where it runs (:func:`load_interpreter`)."""

    interpreter: Any
    path: Path
    """The file it runs: the model, or its Edge TPU twin."""
    accelerator: str
    """``cpu`` or ``edgetpu``."""
    runtime: str
    factory: Callable[[], Any] | None
    """Builds a fresh (unallocated) CPU interpreter of the same file; None on the Edge TPU."""


def load_interpreter(
    model_path: Path, accelerator: str, threads: int, *, what: str = "model"
) -> LoadedModel:
    """The interpreter for ``model_path`` under ``accelerator`` (``cpu``, ``edgetpu`` or
    ``auto``): with ``auto`` or ``edgetpu``, the ``_edgetpu.tflite`` twin on the Edge TPU when
    the twin, the runtime and the device are all there; otherwise (``auto``) the CPU, saying
    why, or (``edgetpu``) AcceleratorError. ``what`` names it in the log (the classifier and
    the vehicle detector share this rule)."""
    Interpreter, load_delegate, runtime = _runtime()
    if accelerator in ("auto", "edgetpu"):
        twin = edgetpu_twin(model_path)
        reason = ""
        if not twin.is_file():
            reason = f"no Edge TPU model {twin.name} next to {model_path.name}"
        else:
            try:
                # Probe with ctypes first: a failed load_delegate() leaves a half-built
                # Delegate whose destructor prints a traceback.
                ctypes.CDLL(EDGETPU_LIBRARY)
                delegate = load_delegate(EDGETPU_LIBRARY)
            except (OSError, ValueError, RuntimeError) as e:
                reason = f"the Edge TPU runtime is not available ({e})"
            else:
                try:
                    it = Interpreter(model_path=str(twin), experimental_delegates=[delegate])
                    it.allocate_tensors()
                except (ValueError, RuntimeError) as e:
                    reason = f"the Edge TPU did not accept {twin.name}: {e}"
                else:
                    log.info("%s %s on the Edge TPU", what, twin)
                    return LoadedModel(it, twin, "edgetpu", runtime, None)
        if accelerator == "edgetpu":
            raise AcceleratorError(f'accelerator = "edgetpu" but {reason}')
        log.info("%sEdge TPU not used: %s; running on the CPU", _prefix(what), reason)
    build = functools.partial(Interpreter, model_path=str(model_path), num_threads=threads)
    try:
        it = build()
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise _explain_load_error(model_path, e) from None
    return LoadedModel(it, model_path, "cpu", runtime, build)


def _prefix(what: str) -> str:
    return "" if what == "model" else f"{what}: "


class LiteRTClassifier:
    """A TFLite phone-in-hand classifier (see module doc). Use :meth:`open`."""

    def __init__(
        self,
        interpreter: Any,
        spec: ModelSpec,
        *,
        model_path: Path,
        sha256: str,
        accelerator: str,
        runtime: str,
        threshold: float | None = None,
        interpreter_factory: Callable[[], Any] | None = None,
    ) -> None:
        """``interpreter_factory`` builds a fresh interpreter for the same model (not yet
        allocated); given one, :meth:`score_batch` may run several ROIs in one ``invoke()``
        (see :attr:`batching`)."""
        self._it = interpreter
        self.spec = spec
        self.model_path = model_path
        self.sha256 = sha256
        self.accelerator = accelerator
        self.runtime = runtime
        self.name = spec.name
        self.version = spec.version
        self.threshold = spec.threshold if threshold is None else threshold
        """The sidecar's threshold, unless the config overrides it (``model.threshold``)."""
        inp = interpreter.get_input_details()
        outs = interpreter.get_output_details()
        if len(inp) != 1:
            raise ModelError(f"{model_path}: expected one input tensor, found {len(inp)}")
        if spec.output_index >= len(outs):
            raise ModelError(
                f"{model_path}: sidecar output.index {spec.output_index} but the model has "
                f"{len(outs)} output(s)"
            )
        self._in = inp[0]
        self._out = outs[spec.output_index]
        self._check_shapes()
        self._in_scale, self._in_zero = (
            float(self._in["quantization"][0]),
            int(self._in["quantization"][1]),
        )
        self._out_scale, self._out_zero = (
            float(self._out["quantization"][0]),
            int(self._out["quantization"][1]),
        )
        self._in_dtype = np.dtype(self._in["dtype"])
        self._pos = np.array(spec.positive_indices, dtype=np.intp)
        self._in_shape = tuple(int(x) for x in self._in["shape"])
        self._n_out = int(np.prod(self._out["shape"]))
        self._out_dtype = np.dtype(self._out["dtype"])
        signature = self._in.get("shape_signature")
        self._factory = interpreter_factory
        self._batchable = (
            interpreter_factory is not None
            and accelerator == "cpu"
            and signature is not None
            and len(signature) > 0
            and int(signature[0]) == -1
        )
        self._batch_its: dict[int, Any] = {}
        self._closed = False

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        model_path: Path | str,
        *,
        sidecar: Path | str | None = None,
        accelerator: str = "cpu",
        threads: int = 2,
        threshold: float | None = None,
    ) -> LiteRTClassifier:
        model_path = Path(model_path)
        spec_path = Path(sidecar) if sidecar is not None else sidecar_path(model_path)
        if not model_path.is_file():
            raise ModelError(f"model file {model_path} does not exist")
        spec = load_spec(spec_path)
        sha = checked_sha256(model_path, spec_path, spec.sha256, accelerator)
        loaded = load_interpreter(model_path, accelerator, threads)
        return cls(
            loaded.interpreter,
            spec,
            model_path=loaded.path,
            sha256=sha if loaded.path == model_path else file_sha256(loaded.path),
            accelerator=loaded.accelerator,
            runtime=loaded.runtime,
            threshold=threshold,
            interpreter_factory=loaded.factory,
        )

    def _check_shapes(self) -> None:
        check_input_shape(self.model_path, self._in["shape"], self.spec.input)
        n_out = int(np.prod(self._out["shape"]))
        if n_out != len(self.spec.labels):
            raise ModelError(
                f"{self.model_path}: model has {n_out} outputs but the sidecar lists "
                f"{len(self.spec.labels)} labels"
            )

    # -- inference ----------------------------------------------------------------------------
    def preprocess(self, crop_bgr: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Crop (and polygon mask) -> the exact tensor (dtype, layout, batch) the model takes."""
        x = preprocess_quantised(
            crop_bgr, self.spec.input, self._in_scale, self._in_zero, self._in_dtype, mask
        )[None]
        return to_layout(x, self.spec.input.layout)

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        """Run the model on one prepared tensor; returns the raw (dequantised) outputs."""
        self._check_tensor(tensor)
        self._it.tensor(self._in["index"])()[...] = tensor  # in place: no temporary view kept
        self._it.invoke()
        raw = self._it.get_tensor(self._out["index"])
        return dequantise(raw, self._out_scale, self._out_zero).reshape(-1)

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """Outputs -> probabilities along the last axis (one row per ROI for a batch)."""
        a = self.spec.activation
        if a == "softmax":
            z = outputs - outputs.max(axis=-1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]
        if a == "sigmoid":
            return 1.0 / (1.0 + np.exp(-outputs))  # type: ignore[no-any-return]
        return outputs

    def score_tensor(self, tensor: np.ndarray) -> float:
        return self.score_batch([tensor])[0]

    @property
    def batching(self) -> bool:
        """Whether :meth:`score_batch` runs several ROIs in one ``invoke()``: a CPU model whose
        input declares a dynamic batch axis. The Edge TPU takes only the compiled shape."""
        return self._batchable

    def score_batch(self, tensors: Sequence[np.ndarray]) -> list[float]:
        """One score per prepared tensor (from :meth:`preprocess`), in order.

        Several tensors on a model that batches go through one ``invoke()`` of an interpreter
        built for that batch size (kept for the next call, up to ``BATCH_CACHE`` sizes);
        otherwise one ``invoke()`` per tensor. Inputs are written into the interpreter's own
        buffer and outputs are dequantised and scored for the whole batch at once."""
        n = len(tensors)
        if n == 0:
            return []
        for t in tensors:
            self._check_tensor(t)
        raw = np.empty((n, self._n_out), dtype=self._out_dtype)
        at = 0
        for size in batch_chunks(n):
            it = self._batch_interpreter(size) if size > 1 else None
            if it is None:
                main = self._it
                for i in range(at, at + size):
                    main.tensor(self._in["index"])()[...] = tensors[i]
                    main.invoke()
                    raw[i] = main.get_tensor(self._out["index"]).reshape(-1)
            else:
                view = it.tensor(self._in["index"])()
                for i in range(size):
                    view[i] = tensors[at + i][0]
                del view  # invoke() refuses to run while a view of its buffers is alive
                it.invoke()
                raw[at : at + size] = it.get_tensor(self._out["index"]).reshape(size, self._n_out)
            at += size
        p = self.probabilities(dequantise(raw, self._out_scale, self._out_zero))
        s = p[:, self._pos].sum(axis=1)
        return [0.0 if v < 0.0 else 1.0 if v > 1.0 else v for v in s.tolist()]

    def _check_tensor(self, tensor: np.ndarray) -> None:
        if tensor.shape != self._in_shape or tensor.dtype != self._in_dtype:
            raise ModelError(
                f"{self.model_path}: a prepared tensor must be {list(self._in_shape)} "
                f"{self._in_dtype}, got {list(tensor.shape)} {tensor.dtype} "
                "(use this classifier's preprocess())"
            )

    def _batch_interpreter(self, n: int) -> Any | None:
        """The interpreter sized for a batch of ``n`` (built on first use), or ``None`` when
        this model does not batch (then every tensor is invoked on its own)."""
        if not self._batchable or self._factory is None:
            return None
        it = self._batch_its.pop(n, None)
        if it is None:
            try:
                it = self._factory()
                it.resize_tensor_input(self._in["index"], [n, *self._in_shape[1:]], strict=True)
                it.allocate_tensors()
                out_shape = tuple(
                    int(x) for x in it.get_output_details()[self.spec.output_index]["shape"]
                )
            except (ValueError, RuntimeError) as e:
                self._refuse_batching(f"resizing its input to a batch of {n} failed: {e}")
                return None
            if out_shape[0] != n or int(np.prod(out_shape)) != n * self._n_out:
                self._refuse_batching(f"a batch of {n} gives outputs shaped {list(out_shape)}")
                return None
            if len(self._batch_its) >= BATCH_CACHE:  # the least recently used size goes
                self._batch_its.pop(next(iter(self._batch_its)))
        self._batch_its[n] = it  # most recently used last
        return it

    def _refuse_batching(self, why: str) -> None:
        log.warning("%s: scoring ROIs one by one: %s", self.model_path.name, why)
        self._batchable = False
        self._batch_its.clear()

    def score(self, crop_bgr: np.ndarray, mask: np.ndarray | None = None) -> float:
        """P(driver holds a phone) for one BGR crop."""
        return self.score_tensor(self.preprocess(crop_bgr, mask))

    def top_label(self, crop_bgr: np.ndarray) -> tuple[str, float]:
        p = self.probabilities(self.invoke(self.preprocess(crop_bgr)))
        i = int(np.argmax(p))
        return self.spec.labels[i], float(p[i])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._it = None
            self._batch_its.clear()

    def __enter__(self) -> LiteRTClassifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
