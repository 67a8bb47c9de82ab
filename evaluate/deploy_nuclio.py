"""Write a run as a Nuclio function for CVAT: `python evaluate/deploy_nuclio.py --run runs/<name> --out nuclio/<name>`."""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from evaluate.cli import deploy_nuclio_main  # noqa: E402

if __name__ == "__main__":
    deploy_nuclio_main()
