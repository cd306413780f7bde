"""Lockgate's shipped data (default policy, policy schema, icons), importable as
``lockgate_resources`` so ``importlib.resources`` finds it wherever Lockgate is installed."""
