"""``python -m jhub_ext.devcluster.agent CONFIG.json``: run the node agent."""

from jhub_ext.devcluster.agent.agent import main

main()
