"""``python -m devcluster.agent CONFIG.json``: run the node agent."""

from devcluster.agent.agent import main

main()
