"""Lockgate's proxy core: policy, decisions, risk, gateway. Runs headless; never imports Qt."""
