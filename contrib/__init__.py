"""Example services built on msgbus (installed as ``msgbus.contrib``)."""
