"""The community node on top of everything: the embedded proof-of-authority chain server
(``node.chain``, which imports no client code), the embedded MQTT broker, the meter
simulator and demo community, the ``lec`` command line and the ``lec up`` composition.
Nothing imports ``node`` except ``node`` and the tests."""
