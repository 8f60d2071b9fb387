#!/usr/bin/python3
"""Writes small real datasets in the formats bnorm reads (CSV and .npy), from
the files Debian's python3-sklearn ships in sklearn/datasets/data/:

  breast_cancer.csv  30 named features + diagnosis (malignant / benign)
  iris.csv           sepal_length, sepal_width, petal_length, petal_width + species
  digits_X.npy       float32 (1797, 1, 8, 8) pixel values 0..16
  digits_y.npy       int64 (1797,) digit labels
  diabetes.csv       10 raw features + progression (a regression target)

  /usr/bin/python3 scripts/sklearn_datasets.py OUTDIR

The data files are read directly (sklearn's loaders are used only for feature
names), and each is checked against its own count header, so a changed file
fails here instead of producing a wrong dataset. Exits 77 when sklearn or its
data directory is missing, so a test can skip."""

import csv
import gzip
import os
import sys

SKIP = 77


def die(message, code=1):
    print(f"sklearn_datasets.py: {message}", file=sys.stderr)
    sys.exit(code)


def data_dir():
    try:
        import numpy  # noqa: F401  (needed for the .npy files)
        import sklearn
    except ImportError as e:
        die(f"{e.name} is not installed (apt-get install python3-sklearn)", SKIP)
    path = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "data")
    if not os.path.isdir(path):
        die(f"sklearn's data directory {path} is missing", SKIP)
    return path


def open_text(path):
    return gzip.open(path, "rt") if path.endswith(".gz") else open(path, newline="")


def number(text, where):
    try:
        return float(text)
    except ValueError:
        die(f"{where}: {text!r} is not a number")


def cell(x):
    """Integers without a decimal point, so a reader can tell integer columns."""
    return str(int(x)) if x.is_integer() else repr(x)


def read_counted(path):
    """A file with sklearn's count header: n_samples, n_features, class names;
    then one row per sample, the features followed by a class index."""
    with open_text(path) as f:
        rows = list(csv.reader(f))
    if not rows or len(rows[0]) < 3:
        die(f"{path}: the first line should be n_samples,n_features,class names...")
    n_samples, n_features = int(rows[0][0]), int(rows[0][1])
    classes = [c.strip() for c in rows[0][2:]]
    body = [r for r in rows[1:] if r]
    if len(body) != n_samples:
        die(f"{path}: the header promises {n_samples} samples, the file has {len(body)}")
    features, labels = [], []
    for i, r in enumerate(body, start=2):
        if len(r) != n_features + 1:
            die(f"{path}: line {i} has {len(r)} fields, expected {n_features + 1}")
        features.append([number(v, f"{path}: line {i}") for v in r[:n_features]])
        k = int(number(r[n_features], f"{path}: line {i}"))
        if not 0 <= k < len(classes):
            die(f"{path}: line {i}: class {k} is not one of the {len(classes)} named in the header")
        labels.append(classes[k])
    return n_features, features, labels


def snake(name):
    """'mean radius' -> 'mean_radius', 'sepal length (cm)' -> 'sepal_length':
    names that need no quoting on a command line."""
    name = name.split("(")[0].strip()
    return "_".join(name.replace("-", " ").split())


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def classification_csv(src, out, loader, label_name):
    n_features, features, labels = read_counted(src)
    names = [snake(n) for n in loader().feature_names]
    if len(names) != n_features:
        die(f"{src}: {n_features} features but sklearn names {len(names)}")
    write_csv(out, names + [label_name], [[cell(x) for x in f] + [y] for f, y in zip(features, labels)])
    print(f"wrote {out}: {len(features)} rows, {n_features} features + {label_name} "
          f"({', '.join(sorted(set(labels)))})")


def digits(src, out_x, out_y):
    import numpy as np
    with gzip.open(src, "rt") as f:
        rows = [r for r in csv.reader(f) if r]
    for i, r in enumerate(rows, start=1):
        if len(r) != 65:
            die(f"{src}: line {i} has {len(r)} fields, expected 64 pixels and a label")
    data = np.array([[number(v, f"{src}: line {i}") for v in r] for i, r in enumerate(rows, start=1)])
    x = data[:, :64].astype(np.float32).reshape(-1, 1, 8, 8)
    y = data[:, 64].astype(np.int64)
    if x.min() < 0 or x.max() > 16 or y.min() < 0 or y.max() > 9:
        die(f"{src}: pixel values should be 0..16 and labels 0..9")
    np.save(out_x, x)
    np.save(out_y, y)
    print(f"wrote {out_x}: float32 {x.shape}")
    print(f"wrote {out_y}: int64 {y.shape}, labels {y.min()}..{y.max()}")


def diabetes(data_path, target_path, out, loader):
    with gzip.open(data_path, "rt") as f:
        features = [[number(v, data_path) for v in line.split()] for line in f if line.strip()]
    with gzip.open(target_path, "rt") as f:
        targets = [number(line, target_path) for line in f if line.strip()]
    names = list(loader().feature_names)
    if len(features) != len(targets) or any(len(r) != len(names) for r in features):
        die(f"{data_path}: {len(features)} rows of features for {len(targets)} targets, "
            f"or rows that are not {len(names)} wide")
    write_csv(out, names + ["progression"], [[cell(x) for x in r] + [cell(t)] for r, t in zip(features, targets)])
    print(f"wrote {out}: {len(features)} rows, {len(names)} features + progression")


def main():
    if len(sys.argv) != 2:
        die("usage: sklearn_datasets.py OUTDIR", 2)
    src = data_dir()
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    from sklearn import datasets

    classification_csv(os.path.join(src, "breast_cancer.csv"), os.path.join(out, "breast_cancer.csv"),
                       datasets.load_breast_cancer, "diagnosis")
    classification_csv(os.path.join(src, "iris.csv"), os.path.join(out, "iris.csv"), datasets.load_iris, "species")
    digits(os.path.join(src, "digits.csv.gz"), os.path.join(out, "digits_X.npy"), os.path.join(out, "digits_y.npy"))
    raw, target = os.path.join(src, "diabetes_data_raw.csv.gz"), os.path.join(src, "diabetes_target.csv.gz")
    if os.path.exists(raw) and os.path.exists(target):
        diabetes(raw, target, os.path.join(out, "diabetes.csv"), datasets.load_diabetes)
    else:
        print(f"skipped diabetes.csv: {raw} or {target} is not shipped here")


if __name__ == "__main__":
    main()
