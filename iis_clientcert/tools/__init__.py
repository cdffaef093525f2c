"""Tools that use the host boundary without Pulumi: the IIS doctor and the HTTPS probe."""
