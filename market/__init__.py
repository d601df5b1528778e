"""The market's services: members' trading agents, the market operator (gate closure,
settlement), the curtailer (trades back inside tightened bands) and the order book
rebuilt from events. They speak to the chain only through ``contracts``."""
