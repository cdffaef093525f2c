"""Another team's stack reads the fleet's outputs through a StackReference.

The fleet stack (examples/fleet) exports what other programs need, typed
(iis_clientcert.SiteExports / HostExports): each site's URL, its server certificate's
thumbprint, the CAs its clients chain to and the accounts they map to. This program turns
them into the settings a client fleet needs (where to connect, which server certificate to
pin, which account a client certificate logs on as), and fails with one clear line when
the fleet stack lacks a host or an output.

Configuration:
    fleet_stack   the fleet's stack, e.g. organization/iis-clientcert-fleet/prod
    hosts         the fleet's hosts these clients use (comma-separated)
"""

import pulumi

from iis_clientcert import SiteExports, read_host, read_site

config = pulumi.Config()
fleet = pulumi.StackReference(config.require("fleet_stack"))


def client_settings(site: SiteExports) -> dict[str, object]:
    return {
        "url": site["url"],
        "pin_server_thumbprint": site["server_thumbprint"],
        "trust": site["root_thumbprints"],
        "logs_on_as": site["accounts"],
    }


settings = {}
for host in config.require("hosts").split(","):
    settings[host] = read_site(fleet, "sites", host).apply(client_settings)
    # The host's own exports too: its endpoint, e.g. for an inventory.
    pulumi.export(
        f"{host}_endpoint", read_host(fleet, "hosts", host).apply(lambda h: h["endpoint"])
    )

pulumi.export("clients", settings)
