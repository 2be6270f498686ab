"""Logical and datapath packet trace (like ovn-trace / ofproto/trace)."""
