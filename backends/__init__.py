"""Built-in backends, one module per broker (installed as ``msgbus.backends``)."""
