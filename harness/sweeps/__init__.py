"""``retain sweep``: expand a W&B-format sweep file into runs (``grid``) and run each as its
own ``retain run`` process (``runner``). Imports no torch.
"""
