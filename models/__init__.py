"""Networks of prn, installed as ``prn_cli.models``: torch modules, losses, assignment and post-processing.

Nothing here imports the CLI or the core; the arrow points CLI -> core -> networks.
"""
