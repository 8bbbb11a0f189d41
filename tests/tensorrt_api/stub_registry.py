"""The real TensorRT 11.4 Python bindings over the stub libnvinfer: `tensorrt` importable, and a small Python plugin
registry standing in for the stub's C++ one (which is NULL), so that `tensorrt.plugin`'s own decorators and
validators run. Imported first by the scripts of this folder (run with the stub on LD_LIBRARY_PATH)."""

import sys

import tensorrt_bindings

sys.modules["tensorrt"] = tensorrt_bindings  # the bindings wheel alone ships no 'tensorrt' module


class PluginRegistry:
    def __init__(self):
        self.creators = {}

    def register_creator(self, creator, namespace):
        self.creators[(creator.name, namespace)] = creator
        return True

    def get_creator(self, name, version, namespace):
        return self.creators.get((name, namespace))


registry = PluginRegistry()
tensorrt_bindings.get_plugin_registry = lambda: registry
