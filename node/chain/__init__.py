"""The embedded proof-of-authority chain server: py-evm with Clique (EIP-225) on the London
VM, kept on disk, served over standard Ethereum JSON-RPC. It imports nothing else of the
project, no client code in particular: every client, ours included, speaks JSON-RPC to it."""
