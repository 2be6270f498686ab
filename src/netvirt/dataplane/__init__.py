"""Data plane: packet codecs now; classifier, flow cache, pipeline and tunnels later.

Mechanism only: this package never imports ``model``, ``northbound`` or
``api``. Policy reaches it as compiled flows through the agent.
"""
