#!/usr/bin/python3
"""Run ONNX's own backend node test cases through bnorm's layers.

Usage:
    /usr/bin/python3 scripts/onnx_conformance.py --runner build/tests/onnx_conformance [--keep DIR]

python3-onnx ships the generators of ONNX's backend node tests
(onnx/backend/test/case/node/*.py). Where the generated cases are not
installed with it (Debian installs only the generators), they are generated
here, in-process, and the cases of the operators a sequential bnorm model is
made of (BatchNormalization, Gemm, Conv, Relu, MaxPool, AveragePool,
GlobalAveragePool, Flatten) are written as ONNX's own tools write them:
CASE/model.onnx and CASE/test_data_set_0/{input,output}_<i>.pb. The runner
(tests/onnx_conformance.cpp) turns each into a bnorm layer, runs it and prints
the table; cases bnorm cannot express are listed with the reason.

Before the cases, two checks that the comparison can fail: a copy of
test_batchnorm_example whose expected output is moved by 2e-5 must be
reported as a failure, and a truncated tensor file as an error naming it.

Exit codes: 0 every case run matched, 1 a mismatch or an error, 77 when
/usr/bin/python3 lacks numpy or onnx (ctest's "skipped").
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

SKIP_EXIT = 77
OPS = {"BatchNormalization", "Gemm", "Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten"}
INSTALLED = "/usr/lib/python3/dist-packages/onnx/backend/test/data/node"

try:
    import numpy as np
    import onnx
    from onnx import numpy_helper
except Exception as exc:  # ImportError, or a broken install raising anything else
    print(f"SKIP: numpy or onnx not available to {sys.executable} ({exc})")
    sys.exit(SKIP_EXIT)


def restore_numpy_aliases():
    """The generators of onnx 1.12 still name np.float, np.int, np.bool and
    np.object, which numpy 1.24 removed; they meant the builtins."""
    for name, builtin in (("float", float), ("int", int), ("bool", bool), ("object", object)):
        if name not in np.__dict__:
            setattr(np, name, builtin)


def node_op(model):
    return model.graph.node[0].op_type if len(model.graph.node) == 1 else None


def installed_cases():
    """Case directories installed with python3-onnx, if any, of OPS."""
    if not os.path.isdir(INSTALLED):
        return []
    cases = []
    for name in sorted(os.listdir(INSTALLED)):
        model_path = os.path.join(INSTALLED, name, "model.onnx")
        if os.path.exists(model_path) and node_op(onnx.load(model_path)) in OPS:
            cases.append(os.path.join(INSTALLED, name))
    return cases


def generate_cases(out_dir):
    """Runs ONNX's node test generators and writes the cases of OPS to out_dir."""
    restore_numpy_aliases()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case import node as node_cases

        cases = node_cases.collect_testcases(None)
    dirs = []
    for case in cases:
        if node_op(case.model) not in OPS:
            continue
        case_dir = os.path.join(out_dir, case.name)
        for i, (inputs, outputs) in enumerate(case.data_sets):
            data_dir = os.path.join(case_dir, f"test_data_set_{i}")
            os.makedirs(data_dir)
            for prefix, arrays, infos in (("input", inputs, case.model.graph.input),
                                          ("output", outputs, case.model.graph.output)):
                for j, (array, info) in enumerate(zip(arrays, infos)):
                    tensor = numpy_helper.from_array(np.asarray(array), info.name)
                    with open(os.path.join(data_dir, f"{prefix}_{j}.pb"), "wb") as f:
                        f.write(tensor.SerializeToString())
        with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        dirs.append(case_dir)
    return sorted(dirs)


def run(runner, dirs):
    return subprocess.run([runner, *dirs], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def check_can_fail(runner, cases, work):
    """The runner must report a moved expected value and a truncated file."""
    source = next((c for c in cases if os.path.basename(c) == "test_batchnorm_example"), None)
    if source is None:
        raise SystemExit("onnx_conformance: test_batchnorm_example was not generated")
    failures = []

    moved = os.path.join(work, "moved", "test_batchnorm_example")
    shutil.copytree(source, moved)
    y_path = os.path.join(moved, "test_data_set_0", "output_0.pb")
    y = onnx.load_tensor(y_path)
    values = numpy_helper.to_array(y).copy()
    values.flat[7] += np.float32(2e-5)
    with open(y_path, "wb") as f:
        f.write(numpy_helper.from_array(values, y.name).SerializeToString())
    result = run(runner, [moved])
    if result.returncode != 1 or "FAIL" not in result.stdout:
        failures.append(f"an expected output moved by 2e-5 was not reported:\n{result.stdout}")

    truncated = os.path.join(work, "truncated", "test_batchnorm_example")
    shutil.copytree(source, truncated)
    x_path = os.path.join(truncated, "test_data_set_0", "input_0.pb")
    with open(x_path, "r+b") as f:
        f.truncate(os.path.getsize(x_path) // 2)
    result = run(runner, [truncated])
    if result.returncode != 1 or x_path not in result.stdout:
        failures.append(f"a truncated input was not reported by name:\n{result.stdout}")

    for failure in failures:
        print(f"FAIL: {failure}")
    if not failures:
        print("ok: a moved expected value and a truncated tensor file are both reported\n")
    return not failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runner", required=True, help="the onnx_conformance program (build/tests/onnx_conformance)")
    parser.add_argument("--keep", help="write the generated cases to this (new) directory and keep them")
    args = parser.parse_args()
    if not os.access(args.runner, os.X_OK):
        print(f"onnx_conformance: {args.runner}: not an executable runner")
        return 1

    work = tempfile.mkdtemp(prefix="bnorm-onnx-conformance-")
    try:
        cases = installed_cases()
        source = INSTALLED
        if not cases:
            case_dir = args.keep or os.path.join(work, "cases")
            os.makedirs(case_dir, exist_ok=False)
            cases = generate_cases(case_dir)
            source = f"generated with onnx {onnx.__version__} into {case_dir}"
        print(f"{len(cases)} ONNX node test cases of {', '.join(sorted(OPS))} ({source})\n")
        ok = check_can_fail(args.runner, cases, work)
        result = run(args.runner, cases)
        print(result.stdout, end="")
        return 0 if ok and result.returncode == 0 else 1
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    sys.exit(main())
