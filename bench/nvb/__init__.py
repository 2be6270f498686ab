"""netvirt's side-by-side benchmark harness (kernel, OVS/OVN, netvirt); see bench/run.py."""
