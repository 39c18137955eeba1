"""phonewatch edge unit: spots drivers holding a mobile phone.

Layers (dependencies point inward):

* ``edge.core`` -- pure logic, stdlib + numpy only;
* ``edge.adapters`` -- cameras, inference runtime, sinks, ... behind small ports;
* ``edge.app`` -- config, composition root, stage threads, CLI.
"""

__version__ = "0.1.0"
