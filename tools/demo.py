#!/usr/bin/env python
"""The former name of ``tools/predict.py``: warns once on stderr, then runs it with the same
arguments ("demo" is ``make demo``'s pipeline, ``tools/run_demo.py``)."""

import os
import runpy
import sys

if __name__ == "__main__":
    print("warning: tools/demo.py is now tools/predict.py; run that instead", file=sys.stderr)
    sys.argv[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "predict.py")
    runpy.run_path(sys.argv[0], run_name="__main__")
