#!/usr/bin/env python3
"""Cut a few sites and weeks out of a free-space trace (how tests/data/trace-slice.csv.gz was made).

    python tools/slice_trace.py ../shared/data/parking-traces/free-spaces-2024-09_2025-08.csv \
        tests/data/trace-slice.csv.gz --from 2025-04-07 --to 2025-05-19 \
        --site regensburg-parken-Parkhaus-Dachauplatz \
        --site mobil-potsdam-parken-P-R-Bahnhof-Pirschheide --site koeln-apps-parken-Marsdorf-P-R

Keeps the trace format (timestamp, one column per site, empty cells as they were), so the slice
is read by the same code as the whole file. Standard library only.
"""
from __future__ import annotations

import argparse
import csv
import gzip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("out", help="output file; .gz is gzip-compressed")
    ap.add_argument("--from", dest="start", required=True, help="first UTC date kept (YYYY-MM-DD)")
    ap.add_argument("--to", dest="end", required=True, help="first UTC date no longer kept")
    ap.add_argument("--site", action="append", required=True)
    args = ap.parse_args()
    with open(args.trace, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        cols = [header.index(s) for s in args.site]
        opener = gzip.open if args.out.endswith(".gz") else open
        with opener(args.out, "wt", encoding="utf-8", newline="") as out:
            w = csv.writer(out, lineterminator="\n")
            w.writerow(["timestamp"] + args.site)
            for row in reader:
                if args.start <= row[0][:10] < args.end and any(row[c] for c in cols):
                    w.writerow([row[0]] + [row[c] for c in cols])


if __name__ == "__main__":
    main()
