"""Off-chain market logic: simulated member agents and the order book built from events."""
