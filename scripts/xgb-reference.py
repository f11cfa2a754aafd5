#!/usr/bin/python3
"""Train XGBoost on a CSV the way `understudy train --csv` does, for comparison.

The reference for the trainer's quality test and for bench/train.  It reads
the CSV with the same rules as understudy (header row; a column is numeric
when every non-empty cell is a finite number, otherwise categorical; empty
cells are missing; the last --valid-fraction of rows, in file order, are the
validation set), trains multi:softprob with depth-1 trees on the histogram
method, and prints one JSON line: rows, rounds, train_seconds (DMatrix
construction plus boosting, CSV parsing excluded), valid_logloss,
valid_accuracy.  The log loss is computed here, with the same clipping as
understudy (probabilities clipped to [1e-15, 1]).

Needs Debian's python3-xgboost and python3-numpy (run with /usr/bin/python3).
"""
import argparse
import csv
import json
import math
import sys
import time

import numpy as np
import xgboost as xgb


def is_number(s):
    try:
        v = float(s)
    except ValueError:
        return False
    return math.isfinite(v)


def load(path, label, drop, categorical):
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    if label not in header:
        sys.exit(f"{path}: no column {label}")
    li = header.index(label)
    keep = [i for i, h in enumerate(header) if i != li and h not in drop]
    y_raw = [r[li] for r in rows]
    classes = sorted(set(y_raw))
    cmap = {c: i for i, c in enumerate(classes)}
    y = np.array([cmap[v] for v in y_raw], dtype=np.float32)
    X = np.empty((len(rows), len(keep)), dtype=np.float32)
    types = []
    for j, i in enumerate(keep):
        col = [r[i] for r in rows]
        numeric = header[i] not in categorical and all(c == "" or is_number(c) for c in col)
        if numeric:
            X[:, j] = [float(c) if c != "" else np.nan for c in col]
            types.append("q")
        else:
            levels = {}
            for c in col:
                if c != "" and c not in levels:
                    levels[c] = len(levels)
            X[:, j] = [levels[c] if c != "" else np.nan for c in col]
            types.append("c")
    return X, y, classes, types, [header[i] for i in keep]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--drop", default="")
    ap.add_argument("--categorical", default="")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--learning-rate", type=float, default=0.3)
    ap.add_argument("--max-bins", type=int, default=256)
    ap.add_argument("--lambda", dest="lam", type=float, default=1.0)
    ap.add_argument("--min-child-weight", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--valid-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-predict", action="store_true",
                    help="also time inplace_predict of every row on one thread (bench/score)")
    a = ap.parse_args()

    drop = set(filter(None, a.drop.split(",")))
    cats = set(filter(None, a.categorical.split(",")))
    X, y, classes, types, names = load(a.csv, a.label, drop, cats)
    n = len(y)
    # As understudy: round(fraction * n), at least one row on each side.
    n_valid = int(math.floor(n * a.valid_fraction + 0.5))
    if a.valid_fraction > 0 and n >= 2:
        n_valid = min(max(n_valid, 1), n - 1)
    n_train = n - n_valid
    params = {
        "objective": "multi:softprob",
        "num_class": len(classes),
        "max_depth": 1,
        "eta": a.learning_rate,
        "tree_method": "hist",
        "max_bin": a.max_bins,
        "lambda": a.lam,
        "min_child_weight": a.min_child_weight,
        "nthread": a.threads,
        "seed": a.seed,
    }
    t0 = time.monotonic()
    dtrain = xgb.DMatrix(X[:n_train], label=y[:n_train], feature_types=types,
                         feature_names=names, enable_categorical=True, nthread=a.threads)
    booster = xgb.train(params, dtrain, a.rounds)
    seconds = time.monotonic() - t0
    out = {"tool": "xgboost", "version": xgb.__version__, "rows": n, "train_rows": n_train,
           "valid_rows": n_valid, "classes": len(classes), "features": len(names),
           "rounds": a.rounds, "train_seconds": round(seconds, 4)}
    if n_valid:
        dvalid = xgb.DMatrix(X[n_train:], feature_types=types, feature_names=names,
                             enable_categorical=True, nthread=a.threads)
        p = booster.predict(dvalid)
        yv = y[n_train:].astype(np.int64)
        pt = np.clip(p[np.arange(n_valid), yv].astype(np.float64), 1e-15, 1.0)
        out["valid_logloss"] = float(-np.mean(np.log(pt)))
        out["valid_accuracy"] = float(np.mean(np.argmax(p, axis=1) == yv))
    if a.time_predict:
        if "c" in types:
            sys.exit("--time-predict needs numeric features only (inplace_predict on numpy)")
        booster.set_param({"nthread": 1})
        best = None
        for _ in range(3):
            t0 = time.monotonic()
            booster.inplace_predict(X)
            dt = time.monotonic() - t0
            best = dt if best is None or dt < best else best
        out["predict_rows"] = n
        out["predict_seconds"] = round(best, 6)
        out["predict_rows_per_s"] = round(n / best)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
