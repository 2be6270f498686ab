"""Central control plane: compiles the NB desired state into SB logical flows."""
