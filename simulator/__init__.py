"""The embedded IIS host: a simulator of an IIS 10 host behind a real WinRM endpoint.

A running simulator's connection: ``endpoint_connection(state_dir, transport="basic")``.
"""

from iis_clientcert_simulator.endpoint import (
    Endpoint,
    EndpointError,
    endpoint_connection,
    read_endpoint,
)

__all__ = ["Endpoint", "EndpointError", "endpoint_connection", "read_endpoint"]
