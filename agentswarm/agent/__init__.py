"""Code that runs inside a sandbox: the worker runner, the built-in agent, external agent drivers.

Everything under this package needs only the standard library and `requests`.
"""
