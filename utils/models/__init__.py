"""Networks by name and the files a trained network lives in: ``networks.get_network`` (the
built-in networks of ``convnets/`` and ``mlp/``, and the researcher's registered ones) and
``model_io`` (model and checkpoint files, atomic and checksummed).

Above ``convnets/`` and ``mlp/``, whose networks it looks up; beneath training.
"""
