"""The two-sites example as the code before named resource types registered it: every
resource class with the SDK's default type (``dynamic:Resource``) and no alias. It runs
``two_sites.py`` beside it (a copy of examples/two_sites/__main__.py), then restores the
classes (an inline run shares the test's process)."""

import runpy
from pathlib import Path

import pulumi.dynamic

from iis_clientcert import providers
from iis_clientcert.framework.resource import IisResource

saved = {name: getattr(providers, name)._resource_type_name for name in providers.__all__}
saved_init = IisResource.__init__
for name in providers.__all__:
    getattr(providers, name)._resource_type_name = "dynamic:Resource"
IisResource.__init__ = pulumi.dynamic.Resource.__init__  # type: ignore[method-assign]
try:
    runpy.run_path(str(Path(__file__).parent / "two_sites.py"), run_name="__main__")
finally:
    IisResource.__init__ = saved_init  # type: ignore[method-assign]
    for name, token in saved.items():
        getattr(providers, name)._resource_type_name = token
