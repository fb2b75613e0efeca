"""One of the concurrent registry writers of tests/test_registry.py (and of the soak script's
checks): waits for a start file, then appends its rows as fast as it can.

    python tests/registry_writer.py REGISTRY WRITER N_ROWS START_FILE [NEW_COLUMN_AT]

Row i of writer w is {"writer": w, "row": i, ...}; with NEW_COLUMN_AT, row NEW_COLUMN_AT and
later ones also carry a column of this writer's own, so the file has to be rewritten.
"""
import sys
import time
from pathlib import Path

from utils.experiments.registry import append_registry_row


def main(registry: str, writer: str, n_rows: str, start_file: str,
         new_column_at: str = "-1") -> int:
    while not Path(start_file).exists():
        time.sleep(0.001)
    for i in range(int(n_rows)):
        row = {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "writer": writer, "row": i,
               "test_error": 0.123456789 * i, "n_hidden": "[1024, 512]",
               "note": 'a "quoted", comma\nand a new line'}
        if 0 <= int(new_column_at) <= i:
            row[f"extra_{writer}"] = i
        append_registry_row(Path(registry), row)
    # The writers must stay light: appending a row never needs JAX.
    return 3 if "jax" in sys.modules else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
