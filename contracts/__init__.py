"""The community contracts: their Solidity sources (``*.sol``) and their Python face.

Build (``build``) and deploy (``deploy``) them, reach a node (``client``), sign
(``accounts``), convert Python units to chain integers (``units``, ``clock``), call each
contract through its typed binding, and follow their events (``events``). Every ABI name
used in Python appears only in this package. It imports nothing else of the project.
"""
