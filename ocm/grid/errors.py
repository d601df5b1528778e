"""The one exception for networks that cannot be modelled."""


class NetworkError(ValueError):
    """A network that cannot be read or modelled; the message names the element at fault."""
