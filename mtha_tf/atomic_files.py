"""Writes that never leave a half-written file: write under a temporary name, then rename (atomic on POSIX)."""

import json
import os


def write_text(path, text):
    partial = path + ".partial"
    with open(partial, "w") as f:
        f.write(text)
    os.replace(partial, path)


def write_json(path, payload, **options):
    write_text(path, json.dumps(payload, indent=1, sort_keys=True, **options))
