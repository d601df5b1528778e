"""The chain side of the community node: contract build and deploy, the proof-of-authority
chain, the chain client, the dApp API and the ``lec`` command line."""
