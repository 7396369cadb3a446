"""The one exception type of the reference executor.

Every fault in a description, its weights or its inputs is raised as `NNXRefError`, so the
CLI can map it to exit status 1 and tests can tell "the file is bad" from "the oracle has a
bug" (any other exception). A validation pass may gather several faults into one error: the
message then has one fault per line, as the C++ command-line tools print them.
"""


class NNXRefError(Exception):
    """A fault in a model description, its weights or the inputs given to it."""

    def __init__(self, faults):
        if isinstance(faults, str):
            faults = [faults]
        self.faults = list(faults)
        super().__init__("\n".join(self.faults))


def layer_label(node, text):
    """How every message names a layer: its node index and constructor string.

    Uses the same shape as the C++ tools (`layer 12 'Conv2d(128,256,3)'`) so that the
    substrings the error fixtures expect are met by the oracle too.
    """
    return f"layer {node} '{text}'"
