"""What the Meta Learner learned, epoch by epoch: `aux_mi` (validation images), how far φ moved
(‖Δφ‖/‖φ‖) and the outer loss's share of what drives φ, for one or more runs side by side.

    python scripts/plot_meta_learning.py runs/a runs/b --names "MKCNet" "regulariser only" \
        --out docs/img/meta_learning.png

Reads each run's history.csv; writes a PNG (plotly + kaleido, which needs a Chromium).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

PANELS = (("val.aux_mi", "aux_mi (nats, validation)"), ("phi_step", "‖Δφ‖ / ‖φ‖ per epoch"),
          ("meta_outer_share", "outer loss's share of ∇ at φ's logits"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--names", nargs="*", help="a legend name per run (default: the folder names)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--title", default="What the Meta Learner learns")
    p.add_argument("--colours", nargs="*", help="a colour per run (default: one each)")
    p.add_argument("--dashed", nargs="*", type=int, default=[], help="runs (1-based) drawn dashed, e.g. a control")
    args = p.parse_args()
    names = args.names or [run.name for run in args.runs]
    if len(names) != len(args.runs):
        print(f"--names: {len(names)} name(s) for {len(args.runs)} run(s)", file=sys.stderr)
        return 2
    if args.colours and len(args.colours) != len(args.runs):
        print(f"--colours: {len(args.colours)} colour(s) for {len(args.runs)} run(s)", file=sys.stderr)
        return 2
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=len(PANELS), subplot_titles=[title for _, title in PANELS])
    palette = args.colours or ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
    for i, (run, name) in enumerate(zip(args.runs, names)):
        history = run / "history.csv"
        if not history.is_file():
            print(f"no history.csv in {run}", file=sys.stderr)
            return 1
        frame = pd.read_csv(history)
        for col, (key, _) in enumerate(PANELS, start=1):
            if key in frame:
                figure.add_trace(go.Scatter(x=frame["epoch"], y=frame[key], name=name, legendgroup=name,
                                            showlegend=col == 1, mode="lines+markers",
                                            line={"color": palette[i % len(palette)],
                                                  "dash": "dash" if i + 1 in args.dashed else "solid"}),
                                 row=1, col=col)
    figure.update_xaxes(title_text="epoch")
    figure.update_layout(title=args.title, template="plotly_white", width=1200, height=420,
                         margin={"l": 50, "r": 20, "t": 70, "b": 40},
                         legend={"orientation": "h", "y": -0.2})  # below: long names are not cut
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.write_image(args.out, scale=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
