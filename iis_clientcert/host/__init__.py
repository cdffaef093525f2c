"""The host boundary: the agent contract, agent.ps1, the client that encodes, calls,
decodes and redacts, the WinRM transport that only runs a command, and the connection.

Nothing here imports pulumi (tests/unit/test_layout.py): the doctor, the benchmarks and
the simulator's tests use it without an engine.
"""
