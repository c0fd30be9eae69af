"""Integer inputs that index a table: the compiler records the table's bounds, the runtime refuses
feeds outside them on every target (TVM's compiled gather segfaulted on an out-of-range token id;
ORT refused it in its own words)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from edgeattn import runtime
from edgeattn.compiler.compile import compile_model
from edgeattn.compiler.index_bounds import index_bounds
from edgeattn.runtime.errors import InputError

TABLE = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)


def _lookup(path, second_table_rows: int | None = None):
    """ids (1, 3) → Gather(table) [+ Gather(small table), summed]; pos: an index computed inside."""
    nodes = [h.make_node("Gather", ["table", "ids"], ["y0"])]
    inits = [nh.from_array(TABLE, "table")]
    if second_table_rows:
        inits.append(nh.from_array(np.ones((second_table_rows, 4), np.float32), "small"))
        nodes += [h.make_node("Gather", ["small", "ids"], ["y1"]), h.make_node("Add", ["y0", "y1"], ["y"])]
    else:
        nodes += [h.make_node("Identity", ["y0"], ["y"])]
    g = h.make_graph(nodes, "lookup", [h.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])], inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    return path


def test_bounds_come_from_the_tables_an_input_indexes(tmp_path):
    assert index_bounds(ir.load(_lookup(tmp_path / "a.onnx"))) == {"ids": [-10, 9]}
    assert index_bounds(ir.load(_lookup(tmp_path / "b.onnx", second_table_rows=6))) == {"ids": [-6, 5]}  # the tightest
    g = h.make_graph([h.make_node("Gather", ["x", "i"], ["y"], axis=1)], "g",
                     [h.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5]), h.make_tensor_value_info("i", TensorProto.INT64, [3])],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), tmp_path / "c.onnx")
    assert index_bounds(ir.load(tmp_path / "c.onnx")) == {}  # the data is an input, not a table: no bound


@pytest.mark.parametrize("target", ["ort", "tvm"])
def test_out_of_range_ids_are_one_clear_error_on_every_target(tmp_path, target):
    if target == "tvm" and importlib.util.find_spec("tvm") is None:
        pytest.skip("apache-tvm is not installed — pip install 'edgeattn[tvm]'")
    m = compile_model(str(_lookup(tmp_path / "m.onnx")), target, tmp_path / "art")
    assert m["index_bounds"] == {"ids": [-10, 9]}
    sess = runtime.load(tmp_path / "art")
    ok = sess.run({"ids": np.array([[0, 9, -10]])})["y"]
    np.testing.assert_array_equal(ok, TABLE[[0, 9, 0]][None])
    for bad in (10, -11, 10**6):
        with pytest.raises(InputError, match=rf"input 'ids' holds {bad}, outside \[-10, 9\]"):
            sess.run({"ids": np.array([[0, bad, 1]])})
        with pytest.raises(InputError, match=rf"input 'ids' holds {bad}"):  # benchmark feeds too
            sess.benchmark(runs=1, warmup=0, feeds={"ids": np.array([[0, bad, 1]])})


def test_tvm_gathers_cannot_read_out_of_bounds_without_the_runtime_check(tmp_path):
    """model.so alone (the runtime's check bypassed): TVM's gathers clamp, where the frontend's fast
    mode read past the table (a segfault in the test process, so this runs in a child)."""
    if importlib.util.find_spec("tvm") is None:
        pytest.skip("apache-tvm is not installed — pip install 'edgeattn[tvm]'")
    compile_model(str(_lookup(tmp_path / "m.onnx")), "tvm", tmp_path / "art")
    code = (f"import numpy as np; from edgeattn import runtime; s = runtime.load({str(tmp_path / 'art')!r}); "
            "s._index_bounds = {}; print(s.run({'ids': np.array([[0, 10**6, 3]])})['y'].tolist())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(np.array(eval(done.stdout.strip().splitlines()[-1])), TABLE[[0, 9, 3]][None])
