#!/usr/bin/env python3
"""Reference run of Splink on FEBRL for `phip bench mpi --splink`.

Runs the standard Splink setup (DuckDB backend, EM-trained m, u from random sampling, blocking
rules, match threshold 0.5) on FEBRL4 (dataset4a vs dataset4b, link only) and FEBRL3 (dataset3,
dedupe only), and prints one JSON object with precision, recall, F1, true/false/missed counts,
comparisons and wall time for each, so phip's matcher can be compared with it side by side.

On first use it creates a virtual environment under the cache directory
(`$PHIP_SPLINK_VENV`, default `~/.cache/phip/splink-venv`), installs the pinned Splink there and
re-executes itself with that interpreter.

Usage: python3 tools/splink_febrl.py [--febrl-dir ../shared/data/febrl]
"""

import argparse
import json
import os
import subprocess
import sys
import time
import venv

SPLINK_VERSION = "5.0.0"
PANDAS_VERSION = "2.2.3"
VENV = os.environ.get(
    "PHIP_SPLINK_VENV", os.path.join(os.path.expanduser("~"), ".cache", "phip", "splink-venv")
)


def ensure_venv():
    """Re-execute inside the cached venv holding the pinned Splink, creating it if needed."""
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    marker = os.path.join(VENV, f".splink-{SPLINK_VERSION}-pandas-{PANDAS_VERSION}")
    if not os.path.exists(marker):
        print(f"creating {VENV} with splink=={SPLINK_VERSION}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        subprocess.check_call(
            [python, "-m", "pip", "install", "--quiet", f"splink=={SPLINK_VERSION}", f"pandas=={PANDAS_VERSION}"],
            stdout=sys.stderr,
        )
        open(marker, "w").close()
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


def load(path, source):
    import pandas as pd

    df = pd.read_csv(path, dtype=str, skipinitialspace=True).fillna("")
    df.columns = [c.strip() for c in df.columns]
    for c in df.columns:
        df[c] = df[c].str.strip().replace("", None)
    df["unique_id"] = df["rec_id"]
    df["cluster"] = df["rec_id"].str.split("-").str[1]
    df["source_dataset"] = source
    return df


def settings(link_type):
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    return SettingsCreator(
        link_type=link_type,
        unique_id_column_name="unique_id",
        blocking_rules_to_generate_predictions=[
            block_on("given_name", "surname"),
            block_on("surname", "date_of_birth"),
            block_on("given_name", "date_of_birth"),
            block_on("postcode", "given_name"),
            block_on("soc_sec_id"),
            block_on("street_number", "postcode"),
        ],
        comparisons=[
            cl.NameComparison("given_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d"),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
            cl.ExactMatch("street_number"),
            cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]),
            cl.JaroWinklerAtThresholds("address_1", [0.9, 0.7]),
            cl.JaroWinklerAtThresholds("suburb", [0.9, 0.7]),
        ],
        retain_intermediate_calculation_columns=False,
    )


def run(frames, link_type, truth_pairs):
    from splink import DuckDBAPI, Linker, block_on

    started = time.perf_counter()
    db_api = DuckDBAPI()
    registered = [db_api.register(f, dataset_display_name=f"df_{i}") for i, f in enumerate(frames)]
    linker = Linker(registered if len(registered) > 1 else registered[0], settings(link_type))
    linker.training.estimate_probability_two_random_records_match(
        [block_on("given_name", "surname", "date_of_birth")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("surname"))
    predictions = linker.inference.predict(threshold_match_probability=0.5).as_pandas_dataframe()
    wall = time.perf_counter() - started
    predicted = {tuple(sorted((l, r))) for l, r in zip(predictions["unique_id_l"], predictions["unique_id_r"])}
    true = len(predicted & truth_pairs)
    false = len(predicted) - true
    missed = len(truth_pairs) - true
    precision = true / len(predicted) if predicted else 0.0
    recall = true / len(truth_pairs) if truth_pairs else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    records = sum(len(f) for f in frames)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true": true,
        "false": false,
        "missed": missed,
        "predicted_pairs": len(predicted),
        "records": records,
        "wall_seconds": wall,
        "records_per_second": records / wall,
    }


def truth(frames, cross_only):
    from collections import defaultdict
    from itertools import combinations

    groups = defaultdict(list)
    for i, f in enumerate(frames):
        for rec, cluster in zip(f["unique_id"], f["cluster"]):
            groups[cluster].append((i, rec))
    pairs = set()
    for members in groups.values():
        for (i, a), (j, b) in combinations(members, 2):
            if not cross_only or i != j:
                pairs.add(tuple(sorted((a, b))))
    return pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--febrl-dir", default="../shared/data/febrl")
    args = parser.parse_args()
    ensure_venv()
    import splink

    d = args.febrl_dir
    a = load(os.path.join(d, "dataset4a.csv"), "a")
    b = load(os.path.join(d, "dataset4b.csv"), "b")
    link = run([a, b], "link_only", truth([a, b], cross_only=True))
    three = load(os.path.join(d, "dataset3.csv"), "a")
    dedupe = run([three], "dedupe_only", truth([three], cross_only=False))
    print(json.dumps({"splink_version": splink.__version__, "febrl4_link": link, "febrl3_dedupe": dedupe}))


if __name__ == "__main__":
    main()
