"""The community's HTTP face: the dApp API under ``/v1`` (public reads, members' private
reads after Sign-In with Ethereum, transactions prepared for and relayed from the members'
own wallets, the DSO's and the market operator's views), the web pages, and the OpenADR 3
VTN that hands devices their bands. ``create_app`` builds it; ``ApiServer`` serves it."""
