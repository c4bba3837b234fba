"""Store every weight layer at one width: per-channel widths re-packed at the widest.

The fpga and TVM kernels extract codes at one width per layer (``bits``), so a layer with
``channel_bits`` reaches them re-packed flat at its widest channel. This is exact (a code
below ``2^b_c`` is a valid ``bits``-wide code and indexes the same LUT entry); it costs the
memory of the widest channel for every channel, which those artifacts' manifests report.
"""

from __future__ import annotations

from dataclasses import replace

from qcompile.ir.graph import Graph


def widest_weights(graph: Graph) -> Graph:
    """``graph`` with each weight layer's codes in the flat layout at its ``bits``
    (:meth:`qcompile.ir.graph.Weights.at_widest`); layers without ``channel_bits`` unchanged."""
    return graph.replace_nodes(
        [
            n
            if n.weights is None or n.weights.channel_bits is None
            else replace(n, weights=n.weights.at_widest())
            for n in graph.nodes
        ]
    )
