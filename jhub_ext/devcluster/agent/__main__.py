"""``python -m jhub_ext.devcluster.agent CONFIG.json``: run the node agent."""

from .agent import main

main()
