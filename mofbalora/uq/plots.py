"""PNG plots of band-gap predictions and their uncertainty (matplotlib, Agg backend).

Figures are drawn on :class:`matplotlib.figure.Figure` with an explicit Agg canvas, so nothing
here touches pyplot's global state or the user's interactive backend. Every function writes a
PNG (creating parent directories) and returns its :class:`~pathlib.Path`. Band gaps, errors and
standard deviations are in eV.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mofbalora.uq.metrics import (
    _as_1d_float,
    miscalibration_area_from_curve,
    spearman_std_abs_error,
    validate_arrays,
)

__all__ = [
    "parity_plot",
    "error_vs_std_plot",
    "calibration_plot",
    "rejection_plot",
    "metric_vs_samples_plot",
]

_DPI = 150


def new_figure(size: tuple[float, float] = (5.0, 4.5)) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=_DPI, format="png")
    return out


def _check_curves(name: str, curves: Any) -> None:
    if not isinstance(curves, Mapping) or len(curves) == 0:
        raise ValueError(f"{name} must be a non-empty dict of label -> curve, got {curves!r:.80}")


def parity_plot(
    y_true: Any, y_pred: Any, y_std: Any, path: str | Path, *, title: str | None = None
) -> Path:
    """Predicted vs reference band gap (eV), points coloured by predicted std (eV).

    Draws the y = x line and puts MAE in the default title.
    """
    pred, std, true = validate_arrays(y_pred, y_std, y_true)
    fig = new_figure()
    ax = fig.add_subplot()
    order = np.argsort(std)  # most uncertain drawn last, on top
    sc = ax.scatter(
        true[order], pred[order], c=std[order], s=12, cmap="viridis", alpha=0.85, linewidths=0
    )
    lo = float(min(true.min(), pred.min()))
    hi = float(max(true.max(), pred.max()))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.3", lw=1, ls="--", label="y = x")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("Reference band gap (eV)")
    ax.set_ylabel("Predicted band gap (eV)")
    mae_ev = float(np.mean(np.abs(pred - true)))
    ax.set_title(title if title is not None else f"Parity (n = {pred.size}, MAE = {mae_ev:.3f} eV)")
    fig.colorbar(sc, ax=ax, label="Predicted std (eV)")
    ax.legend(loc="upper left", frameon=False)
    return save_figure(fig, path)


def error_vs_std_plot(
    y_true: Any, y_pred: Any, y_std: Any, path: str | Path, *, title: str | None = None
) -> Path:
    """Absolute error (eV) against predicted std (eV), with the Spearman rho in the title.

    Also draws ``E|error| = sqrt(2/pi) * std``, where a calibrated Gaussian's points scatter.
    Arguments are in the same order as :func:`parity_plot`.
    """
    pred, std, true = validate_arrays(y_pred, y_std, y_true)
    abs_err = np.abs(pred - true)
    rho = spearman_std_abs_error(pred, std, true)
    fig = new_figure()
    ax = fig.add_subplot()
    ax.scatter(std, abs_err, s=10, alpha=0.6, linewidths=0, color="tab:blue")
    x = np.linspace(0.0, float(std.max()) * 1.05, 50)
    ax.plot(
        x,
        np.sqrt(2.0 / np.pi) * x,
        color="tab:red",
        lw=1.2,
        label=r"calibrated: $\sqrt{2/\pi}\,\sigma$",
    )
    ax.set_xlabel("Predicted std (eV)")
    ax.set_ylabel("|Error| (eV)")
    rho_text = "nan" if np.isnan(rho) else f"{rho:.3f}"
    prefix = f"{title}: " if title else ""
    ax.set_title(f"{prefix}Spearman ρ = {rho_text} (n = {pred.size})")
    ax.set_xlim(left=0.0)
    ax.set_ylim(bottom=0.0)
    ax.legend(loc="upper left", frameon=False)
    return save_figure(fig, path)


def calibration_plot(
    curves: Mapping[str, tuple[Any, Any]], path: str | Path, *, title: str | None = None
) -> Path:
    """Calibration curves: observed vs expected proportion in central intervals (unitless).

    ``curves`` maps a label to ``(expected, observed)`` as returned by
    :func:`~mofbalora.uq.metrics.calibration_curve`; the legend shows each miscalibration area.
    """
    _check_curves("curves", curves)
    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.3", lw=1, ls="--", label="ideal")
    for label, pair in curves.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"curves[{label!r}] must be an (expected, observed) pair")
        expected = _as_1d_float(f"curves[{label!r}] expected", pair[0])
        observed = _as_1d_float(f"curves[{label!r}] observed", pair[1])
        area = miscalibration_area_from_curve(expected, observed)
        ax.plot(expected, observed, lw=1.6, label=f"{label} (area {area:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("Expected proportion in central interval")
    ax.set_ylabel("Observed proportion in central interval")
    ax.set_title(title if title is not None else "Calibration")
    ax.legend(loc="upper left", frameon=False, fontsize="small")
    return save_figure(fig, path)


def rejection_plot(
    curves: Mapping[str, Mapping[str, Any]], path: str | Path, *, title: str | None = None
) -> Path:
    """MAE of retained points (eV) vs fraction rejected, highest std rejected first.

    ``curves`` maps a label to a :func:`~mofbalora.uq.metrics.rejection_curve` dict. The first
    entry's oracle (reject highest error first) and random curves are drawn as references.
    """
    _check_curves("curves", curves)
    fig = new_figure((5.5, 4.5))
    ax = fig.add_subplot()
    for i, (label, curve) in enumerate(curves.items()):
        missing = [
            k
            for k in ("fraction_rejected", "mae_model", "mae_oracle", "mae_random")
            if k not in curve
        ]
        if missing:
            raise ValueError(
                f"curves[{label!r}] is missing key(s) {missing}; pass rejection_curve(...) dicts"
            )
        x = _as_1d_float(f"curves[{label!r}] fraction_rejected", curve["fraction_rejected"])
        (line,) = ax.plot(
            x, _as_1d_float(f"curves[{label!r}] mae_model", curve["mae_model"]), lw=1.6, label=label
        )
        if i == 0:
            ax.plot(
                x,
                _as_1d_float("mae_oracle", curve["mae_oracle"]),
                color=line.get_color(),
                ls=":",
                lw=1.2,
                label=f"{label}: oracle",
            )
            ax.plot(
                x,
                _as_1d_float("mae_random", curve["mae_random"]),
                color="0.4",
                ls="--",
                lw=1.2,
                label=f"{label}: random",
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("Fraction rejected (highest std first)")
    ax.set_ylabel("MAE of retained points (eV)")
    ax.set_title(title if title is not None else "Rejection curve")
    ax.legend(loc="best", frameon=False, fontsize="small")
    return save_figure(fig, path)


def metric_vs_samples_plot(
    t_values: Sequence[float] | Any,
    values: Mapping[str, Sequence[float] | Any],
    path: str | Path,
    ylabel: str,
    reference: Mapping[str, float] | None = None,
    *,
    title: str | None = None,
    logx: bool = False,
) -> Path:
    """A metric against the number of posterior samples T, one line per label.

    Args:
        t_values: the numbers of samples T (x axis).
        values: label -> metric values, one per entry of ``t_values``.
        path: output PNG.
        ylabel: y-axis label, with its unit, e.g. ``"MAE (eV)"``.
        reference: label -> value drawn as a horizontal dashed line (e.g. a deep ensemble).
        title: optional title.
        logx: log-scale the T axis.
    """
    t = _as_1d_float("t_values", t_values)
    _check_curves("values", values)
    if not isinstance(ylabel, str) or not ylabel:
        raise TypeError(f"ylabel must be a non-empty string, got {ylabel!r}")
    fig = new_figure((5.5, 4.0))
    ax = fig.add_subplot()
    for label, ys in values.items():
        y = np.asarray(ys, dtype=np.float64)
        if y.ndim != 1 or y.size != t.size:
            raise ValueError(
                f"values[{label!r}] must have one value per T ({t.size}), got shape {y.shape}"
            )
        ax.plot(t, y, marker="o", ms=4, lw=1.5, label=label)
    if reference:
        colors = ["0.2", "tab:red", "tab:purple", "tab:brown", "tab:gray"]
        for i, (label, val) in enumerate(reference.items()):
            ax.axhline(
                float(val),
                color=colors[i % len(colors)],
                ls="--",
                lw=1.1,
                label=f"{label} (reference)",
            )
    if logx:
        ax.set_xscale("log")
        ax.set_xticks(t, [f"{v:g}" for v in t])
        ax.minorticks_off()
    ax.set_xlabel("Number of posterior samples T")
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.legend(loc="best", frameon=False, fontsize="small")
    return save_figure(fig, path)
