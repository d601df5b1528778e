"""The embedded proof-of-authority chain: py-evm with Clique (EIP-225) on the London VM,
kept on disk, served over standard Ethereum JSON-RPC."""
