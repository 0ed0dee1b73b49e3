#!/usr/bin/env python
"""Excitation analysis of a trained SE model (SE paper Sec. 7, Figs. 6/7).

    python tools/analyze_excitation.py --checkpoint out/digits/best.pth --output out/excitation
    python tools/analyze_excitation.py --config-file CONFIG --output out/excitation_det \
        MODEL.WEIGHTS model_final.pth

See ``docs/tutorials/excitation_analysis.md`` and se_detectron/analysis/.
"""

import sys

from se_detectron.analysis.cli import cli

if __name__ == "__main__":
    sys.exit(cli())
