"""MS-PanopticFPN, the base panoptic network: ResNet + FPN (P3-P7), an ATSS detector with decoupled objectness and
hierarchical classification, a Realtime-Panoptic semantic branch at stride 4, a SAG-Mask instance branch and
PanopticFPN-style fusion."""
