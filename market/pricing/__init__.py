"""The DSO's price instruments as pure computation (no chain, no I/O): the transactive
flexibility market's clearing (``tfm``: inputs and the central LP; ``admm``: the same optimum
between a market operator and a DSO that keeps its network data to itself)."""
