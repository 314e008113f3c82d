"""`runctl schema`: the JSON Schema of a config file, for YAML editors to complete and check configs.

Built from engine.schema's model (no torch), so it is always the schema the CLI validates against.
"""

from __future__ import annotations

import argparse
import json
import sys

from runctl.engine.schema import json_schema


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
    return 0
