"""One deployed community: its nine contracts, each through its typed binding.

Services and the command line hold a ``Community`` and speak to ``community.registry``,
``.ledger``, ``.limits``, ``.token``, ``.market``, ``.settlement``, ``.tariff``,
``.flexibility_market`` and ``.devices`` in Python units;
``community.clock`` turns instants into the community's market slots.
"""

from __future__ import annotations

from decimal import Decimal

from web3.types import TxReceipt

from contracts.client import ChainClient, Signer
from contracts.clock import SlotClock
from contracts.deploy import Deployment
from contracts.devices import DeviceStates
from contracts.flexibility import FlexibilityMarket
from contracts.ledger import Ledger
from contracts.limits import CapacityLimits
from contracts.market import EnergyMarket
from contracts.registry import Registry
from contracts.settlement import Settlement
from contracts.tariff import DynamicTariff
from contracts.token import Token


class Community:
    """The contracts of one deployed community, spoken to in Python units."""

    def __init__(self, client: ChainClient, deployment: Deployment):
        self.client = client
        self.deployment = deployment
        self.clock = SlotClock(deployment.config.slot_minutes)
        addresses = deployment.addresses
        self.registry = Registry(client, addresses["CommunityRegistry"])
        self.ledger = Ledger(client, addresses["MeasurementLedger"])
        self.limits = CapacityLimits(client, addresses["CapacityLimits"])
        self.token = Token(client, addresses["CommunityToken"])
        self.market = EnergyMarket(client, addresses["EnergyMarket"])
        self.settlement = Settlement(client, addresses["Settlement"])
        self.tariff = DynamicTariff(client, addresses["DynamicTariff"])
        self.flexibility_market = FlexibilityMarket(client, addresses["FlexibilityMarket"])
        self.devices = DeviceStates(client, addresses["DeviceStates"])

    @property
    def slot_minutes(self) -> int:
        return self.clock.slot_minutes

    def fund(self, account: Signer, tokens: Decimal | str) -> list[TxReceipt]:
        """Move ``tokens`` of ``account`` into its deposit in the settlement (an approval of
        exactly that amount, then the deposit): what its orders lock and its bills are paid from."""
        return [
            self.token.approve(account, self.settlement.address, tokens),
            self.settlement.deposit(account, tokens),
        ]

    def deposits_held(self) -> Decimal:
        """Tokens the settlement holds: every deposit, free and locked."""
        return self.token.balance(self.settlement.address)
