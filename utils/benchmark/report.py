"""The benchmark's printed report: the table of figures, the ratios, pipeline and devices."""
from __future__ import annotations

from utils.benchmark.measure import AUGMENTED, PEERS


def format_report(report: dict) -> str:
    return "\n".join(_header_lines(report) + [""] + _table_lines(report["results"]) + [""]
                     + _ratio_lines(report["results"])
                     + _pipeline_lines(report.get("input_pipeline"))
                     + _scaling_lines(report.get("device_scaling")))


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2 ** 20:,.0f}"


def _header_lines(report: dict) -> list[str]:
    device = report["device"] or {}
    lines = [f"command: {report['command']}"]
    if device.get("platform") == "cpu":
        lines.append(f"device: {device['name']}, {device['cores']} cores "
                     f"({device['usable_cores']} usable), {device['memory_gib']} GiB")
    elif device:
        lines.append(f"device: {device['count']} x {device['name']}, "
                     f"{device['memory_gib']} GiB")
    lines.append("matmul peak, measured in this run: " + ", ".join(
        f"{dtype} {gflops:.0f} GFLOP/s" for dtype, gflops in report["matmul_peak_gflops"].items())
        + " (each dtype's % peak is of its own)")
    lines.append("host tuning: " + ("; ".join(report["host_tuning"]) or "none"))
    if report.get("bfloat16_note"):
        lines.append(report["bfloat16_note"])
    return lines


_COLUMNS = ("net", "batch", "dtype", "params", "GFLOP/img fwd / train", "impl", "compile s",
            "train img/s", "% peak", "infer img/s", "% peak", "step MiB", "peak RSS MiB")


def _table_lines(results: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for result in results:
        flops = result.get("flops_per_image")
        head = (f"| {result['network']} | {result['batch_size']} | {result['dtype']} | "
                f"{result.get('params', 0):,} | "
                + (f"{flops['forward'] / 1e9:.3f} / {flops['train'] / 1e9:.3f}" if flops
                   else "-") + " |")
        for kind in ("ours", AUGMENTED, *PEERS):
            figures = result["implementations"].get(kind)
            if figures is not None:
                lines.append(f"{head} {kind} | {_figure_cells(figures)} |")
                head = "| | | | | |"
    return lines


def _figure_cells(figures: dict) -> str:
    if "error" in figures:
        return figures["error"].splitlines()[0] + " |" * 6
    memory = figures["memory"]
    rss = memory.get("device_peak_bytes") or memory["process_peak_rss_bytes"]
    return (f"{figures['compile_s']:.1f} | {figures['train_img_s']:.1f} | "
            f"{figures.get('train_pct_of_peak', 0):.0f} | {figures['eval_img_s']:.1f} | "
            f"{figures.get('eval_pct_of_peak', 0):.0f} | "
            f"{_mib(memory.get('train_step_bytes'))} | {_mib(rss)}")


def _ratio_lines(results: list[dict]) -> list[str]:
    lines = []
    for result in results:
        label = f"{result['network']} @ {result['batch_size']} {result['dtype']}"
        for name, rounds in (("ratios", "best rounds"), ("ratios_median", "medians")):
            if result.get(name):
                lines.append(f"{label}: ours / peer, {rounds}: " + ", ".join(
                    f"{key.replace('_vs_', ' vs ')} {value:.2f}x"
                    for key, value in result[name].items()))
        if "augment_cost_pct" in result:
            lines.append(f"{label}: online augmentation ({result['augment']}) adds "
                         f"{result['augment_cost_pct']:.1f} % to the training step "
                         f"(medians: {result['augment_cost_pct_median']:.1f} %)")
    return lines


def _pipeline_lines(pipeline: dict | None) -> list[str]:
    if not pipeline:
        return []
    if "error" in pipeline:
        return ["", f"input pipeline: failed: {pipeline['error'].splitlines()[0]}"]
    return ["", f"input pipeline ({pipeline['network']} @ {pipeline['batch_size']}, "
                f"{pipeline['batches_per_epoch']} batches of {pipeline['dataset']}, "
                f"split {pipeline['split']}): training {pipeline['resident_img_s']:.1f} "
                f"img/s with the set in device memory, {pipeline['streamed_img_s']:.1f} "
                f"streamed from HDF5 (cost {pipeline['streaming_cost_pct']:.1f} %); "
                f"the loader alone delivers {pipeline['loader_img_s']:.0f} img/s "
                f"({pipeline['loader_share_of_step_pct']:.1f} % of a step's time)"]


def _scaling_lines(scaling: dict | None) -> list[str]:
    if not scaling:
        return []
    lines = ["", f"devices ({scaling['network']} @ {scaling['batch_size']}, the global "
                 f"batch split across them):",
             "| devices | train img/s | x | infer img/s | x |", "|---|---|---|---|---|"]
    for row in scaling["rows"]:
        if "error" in row:
            lines.append(f"| {row['devices']} | {row['error'].splitlines()[0]} | | | |")
        else:
            lines.append(f"| {row['devices']} | {row['train_img_s']:.1f} | "
                         f"{row.get('train_scaling', 1):.2f} | {row['eval_img_s']:.1f} | "
                         f"{row.get('eval_scaling', 1):.2f} |")
    if any(row.get("platform") == "cpu" for row in scaling["rows"]):
        lines.append("(CPU: the devices are forced host devices sharing the same cores)")
    return lines
