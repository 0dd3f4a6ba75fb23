"""prn: panoptic segmentation refinement.

The package holds the command line (``prn_cli.cli``) and the core that it calls, usable from Python:

- ``prn_cli.panoptic``: the COCO panoptic format (read, validate, write atomically, id <-> RGB)
- ``prn_cli.evaluate``: PQ / SQ / RQ, identical to the COCO reference evaluator
- ``prn_cli.visualize``: overlays and side-by-side panels
- ``prn_cli.synth``: a deterministic synthetic panoptic dataset
- ``prn_cli.models``: the networks (shipped from the repository's ``models/`` folder)
"""

__version__ = "0.1.0"
