"""Dynamic resource providers for IIS client-certificate authentication."""
