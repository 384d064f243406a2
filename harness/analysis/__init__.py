"""Reading finished runs: ``retain compare`` (grouping, mean and CI over seeds, paired tests)
and ``retain report`` (a self-contained HTML dashboard). Imports no torch.
"""
