"""One toy dynamic resource (the toolchain test's program)."""

import pulumi

from tests.engine.toy_provider import Toy

toy = Toy("toy", value="hello")
pulumi.export("toy_value", toy.value)
