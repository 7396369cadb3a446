"""A model description turned into a wired graph (ARCH_FORMAT.md §3, §4, §5, §7).

`parse_description(arch)` takes the architecture as a Python object (from the JSON dialect
or from a one-file .pth, tuples already turned into lists) and returns a `Graph`:

- one `Layer` per description, in description order (`u`), with its node indices, its
  constructor text, its parsed `Call` and its declared channels (ints);
- the wiring: for every node input port, the (src_node, src_output) feeding it, from
  `connections`, from each description's REL, then (with `auto_connect`) from the channel
  search of §7;
- the network outputs as absolute (src_node, src_output), in network-output order.

Structural faults (unknown forms, index duplicates and gaps, connections to missing nodes or
ports, ports fed twice or never, cycles, output index gaps, `outputs_channels` of the wrong
length) are collected into `Graph.faults`, not raised one by one, so a validation pass can
report them all. Faults that need the ops and real tensors (channel counts) are the
executor's part.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .calls import Call, eval_channels, parse_call
from .errors import NNXRefError, layer_label

LAYER_KEYS = ("layers", "unique_layers_recreators")


@dataclass
class Layer:
    u: int                          # description index (0-based), also the state-dict index
    nodes: List[int]                # node indices this module is used at
    text: str                       # constructor text as written (with the module prefix)
    call: Optional[Call]            # None when the text could not be parsed
    in_ch: List[int]                # declared input channels (auto_connect's key)
    out_ch: List[int]               # declared output channels
    rel: Optional[list] = None      # REL sources, as written

    def label(self, node=None):
        return layer_label(self.nodes[0] if node is None else node, self.text)


@dataclass
class Graph:
    inputs_channels: List[int]
    outputs_channels: List[int]
    layers: List[Layer]
    node_layer: Dict[int, Layer]                        # node index -> its layer
    feeds: Dict[Tuple[int, int], Tuple[int, int]]       # (dst, dst_in) -> (src, src_out)
    outputs: List[Tuple[int, int]]                      # network output k -> (src, src_out)
    order: List[int]                                    # topological order of nodes 1..N
    faults: List[str] = field(default_factory=list)
    locals: Dict = field(default_factory=dict)
    attempted: set = field(default_factory=set)                 # ports explicitly wired

    @property
    def num_nodes(self):
        """N, the last node index (with index gaps, which are faults, still the last)."""
        return max(self.node_layer, default=0)

    def num_outputs_of(self, node):
        if node == 0:
            return len(self.inputs_channels)
        return len(self.node_layer[node].out_ch)

    def out_channels_of(self, node):
        return self.inputs_channels if node == 0 else self.node_layer[node].out_ch

    def node_label(self, node):
        return self.node_layer[node].label(node)


def _is_int(v):
    return type(v) is int


def _is_ch(v):
    """A channel list pair [[in...], [out...]]."""
    return isinstance(v, list) and len(v) == 2 and all(isinstance(x, list) for x in v)


def _is_out(v):
    return _is_int(v) or isinstance(v, str)


def _split_form(desc):
    """Recognises the §5 forms. Returns (idx, call_text, ch_or_out, rel, module) where
    ch_or_out is None (channels = previous), an OUT value or a CH pair."""
    if isinstance(desc, str):
        desc = [desc]
    if not isinstance(desc, list) or not desc:
        return None
    s = [isinstance(d, str) for d in desc]
    n = len(desc)
    if isinstance(desc[0], str):                     # forms without IDX
        if n == 1:
            return None, desc[0], None, None, None
        if n == 2 and _is_out(desc[1]):
            return None, desc[0], desc[1], None, None
        if n == 2 and _is_ch(desc[1]):
            return None, desc[0], desc[1], None, None
        if n == 3 and _is_ch(desc[1]) and isinstance(desc[2], list):
            return None, desc[0], desc[1], desc[2], None
        return None
    if isinstance(desc[0], list) and n >= 2 and s[1]:  # forms with IDX
        if n == 2:
            return desc[0], desc[1], None, None, None
        if n == 3 and (_is_out(desc[2]) or _is_ch(desc[2])):
            return desc[0], desc[1], desc[2], None, None
        if n == 4 and _is_ch(desc[2]) and s[3]:
            return desc[0], desc[1], desc[2], None, desc[3]
    return None


def _channels(ch_or_out, prev, locals_, errors):
    """Declared (in, out) channels. A count that cannot be evaluated is appended to
    `errors` and stands as -1 (matches nothing, checked against nothing), so one bad
    expression does not cascade into wiring faults."""
    def one(value):
        try:
            return eval_channels(value, locals_)
        except ValueError as e:
            errors.append(str(e))
            return -1

    if ch_or_out is None:
        return [prev], [prev]
    if _is_ch(ch_or_out):
        return [one(c) for c in ch_or_out[0]], [one(c) for c in ch_or_out[1]]
    return [prev], [one(ch_or_out)]


def _check_list_of_ints(value, what):
    if not isinstance(value, list) or not all(_is_int(v) for v in value):
        raise NNXRefError(f"{what} must be a list of ints, not {value!r}")
    return value


def parse_description(arch, name="description"):
    """Builds the Graph of an architecture object; raises NNXRefError only when the
    top-level keys themselves are unusable, else collects faults in Graph.faults."""
    if not isinstance(arch, dict):
        raise NNXRefError(f"{name}: the architecture must be an object")
    faults = []
    inputs_channels = _check_list_of_ints(arch.get("inputs_channels"), f"{name}: inputs_channels")
    outputs_channels = _check_list_of_ints(arch.get("outputs_channels"),
                                           f"{name}: outputs_channels")
    if not inputs_channels:
        raise NNXRefError(f"{name}: inputs_channels must not be empty")
    key = next((k for k in LAYER_KEYS if k in arch), None)
    if key is None or not isinstance(arch[key], list):
        raise NNXRefError(f"{name}: no 'layers' list")
    locals_ = arch.get("locals") or {}
    if not isinstance(locals_, dict):
        raise NNXRefError(f"{name}: locals must be an object")

    # Descriptions -> layers, with node indices (smallest unused, in description order, as
    # the original assigned them: an index is "used" once an earlier description took it).
    layers, used = [], {0}
    prev = inputs_channels[0]
    for u, desc in enumerate(arch[key]):
        form = _split_form(desc)
        if form is None:
            faults.append(f"layer description {u} ({desc!r}): not one of the layer forms")
            continue
        idx, text, ch_or_out, rel, module = form
        if idx is None:
            idx = [min(set(range(len(used) + 1)) - used)]
        elif not idx or not all(_is_int(i) and i >= 1 for i in idx):
            faults.append(f"layer description {u} '{text}': node indices must be ints >= 1, "
                          f"not {idx!r}")
            continue
        full_text = f"{module}.{text}" if module else text
        errors = []
        in_ch, out_ch = _channels(ch_or_out, prev, locals_, errors)
        faults.extend(f"{layer_label(idx[0], full_text)}: {e}" for e in errors)
        try:
            call = parse_call(full_text, locals_)
        except ValueError as e:
            faults.append(f"{layer_label(idx[0], full_text)}: bad constructor string: {e}")
            call = None
        for i in idx:
            if i in used:
                faults.append(f"{layer_label(i, full_text)}: node index {i} is used twice")
        used.update(idx)
        layers.append(Layer(u, list(idx), full_text, call, in_ch, out_ch, rel))
        prev = out_ch[0] if out_ch else prev

    node_layer = {}
    for layer in layers:
        for i in layer.nodes:
            node_layer.setdefault(i, layer)
    n = max(node_layer, default=0)
    if n > 1_000_000:
        faults.append(f"node index {n} is implausibly large")
    else:
        # A run of missing indices is one fault: [[1000000], ...] must not list a million.
        i = 1
        while i <= n:
            if i in node_layer:
                i += 1
                continue
            last = i
            while last < n and last + 1 not in node_layer:
                last += 1
            what = f"node index {i} is" if last == i else f"node indices {i}..{last} are"
            faults.append(f"{what} missing: node indices must be 1..{n} without gaps")
            i = last + 1

    graph = Graph(inputs_channels, outputs_channels, layers, node_layer, {}, [], [], faults,
                  locals_)
    if n > 1_000_000:
        return graph  # as the runtime does: nothing is wired past an implausible index
    _wire(graph, arch)
    _resolve_outputs(graph, arch)
    _order(graph)
    return graph


def _num_inputs(graph, node):
    return len(graph.node_layer[node].in_ch)


def _add_feed(graph, src, src_out, dst, dst_in, what):
    """Records one explicit connection after checking both ends. A port that a faulty
    connection aims at counts as fed (`graph.attempted`), so it is not reported again as
    never fed, nor auto-connected."""
    faults = graph.faults
    graph.attempted.add((dst, dst_in))
    if dst not in graph.node_layer:
        faults.append(f"{what}: destination node {dst} does not exist")
        return
    label = graph.node_label(dst)
    if src < 0:
        faults.append(f"{label}: {what}: source node {src} is before node 0")
        return
    if src != 0 and src not in graph.node_layer:
        faults.append(f"{label}: {what}: source node {src} does not exist")
        return
    if not 0 <= src_out < graph.num_outputs_of(src):
        faults.append(f"{label}: {what}: node {src} has no output {src_out} "
                      f"(it has {graph.num_outputs_of(src)})")
        return
    if not 0 <= dst_in < _num_inputs(graph, dst):
        faults.append(f"{label}: {what}: input {dst_in} does not exist "
                      f"(the layer declares {_num_inputs(graph, dst)} inputs)")
        return
    if (dst, dst_in) in graph.feeds:
        s, o = graph.feeds[(dst, dst_in)]
        faults.append(f"{label}: input {dst_in} is fed twice (from node {s} output {o} "
                      f"and from node {src} output {src_out})")
        return
    graph.feeds[(dst, dst_in)] = (src, src_out)


def _wire(graph, arch):
    conns = arch.get("connections") or []
    if not isinstance(conns, list):
        graph.faults.append("connections must be a list")
        conns = []
    for c in conns:
        if not (isinstance(c, list) and len(c) == 4 and all(_is_int(v) for v in c)):
            graph.faults.append(f"connection {c!r}: must be [src_node, src_output, dst_node, "
                                f"dst_input]")
            continue
        src, src_out, dst, dst_in = c
        if src < 0:
            src = dst + src
        _add_feed(graph, src, src_out, dst, dst_in, f"connection {c}")
    for layer in graph.layers:
        if layer.rel is None:
            continue
        dst = layer.nodes[0]
        for dst_in, r in enumerate(layer.rel):
            if not (isinstance(r, list) and len(r) == 2 and all(_is_int(v) for v in r)):
                graph.faults.append(f"{layer.label()}: REL entry {r!r} must be "
                                    f"[src_node, src_output]")
                continue
            src = dst + r[0] if r[0] < 0 else r[0]
            _add_feed(graph, src, r[1], dst, dst_in, f"REL source {dst_in} {r}")
    if arch.get("auto_connect"):
        _auto_connect(graph)
    for node in sorted(graph.node_layer):
        for dst_in in range(_num_inputs(graph, node)):
            if (node, dst_in) not in graph.feeds and (node, dst_in) not in graph.attempted:
                graph.faults.append(f"{graph.node_label(node)}: input {dst_in} is not fed")


def _auto_connect(graph):
    """§7: each unfed input takes the nearest preceding node (dst-1 down to 0) that has an
    output with the same *declared* channel count; outputs in order; first match wins."""
    for dst in sorted(graph.node_layer):
        for dst_in, ch in enumerate(graph.node_layer[dst].in_ch):
            if (dst, dst_in) in graph.feeds or (dst, dst_in) in graph.attempted:
                continue
            for src in range(dst - 1, -1, -1):
                if src != 0 and src not in graph.node_layer:
                    continue
                outs = graph.out_channels_of(src)
                if ch in outs:
                    graph.feeds[(dst, dst_in)] = (src, outs.index(ch))
                    break


def _resolve_outputs(graph, arch):
    outs = arch.get("outputs")
    if not isinstance(outs, list):
        graph.faults.append("outputs must be a list of [src_node, src_output, network_output]")
        return
    n = graph.num_nodes
    by_index = {}
    count = 0       # number of network outputs: one more than the largest index given
    for o in outs:
        if not (isinstance(o, list) and len(o) == 3 and all(_is_int(v) for v in o)):
            graph.faults.append(f"output {o!r}: must be [src_node, src_output, network_output]")
            continue
        src, src_out, k = o
        count = max(count, k + 1)
        if src < 0:
            src = n + 1 + src
        if src < 0 or (src != 0 and src not in graph.node_layer):
            graph.faults.append(f"output {o}: node {src} does not exist")
            continue
        if not 0 <= src_out < graph.num_outputs_of(src):
            graph.faults.append(f"output {o}: node {src} has no output {src_out}")
            continue
        if k < 0:
            graph.faults.append(f"output {o}: network output index {k} is negative")
            continue
        if k in by_index:
            graph.faults.append(f"output {o}: network output {k} is given twice")
            continue
        by_index[k] = (src, src_out)
    faulty = {o[2] for o in outs if isinstance(o, list) and len(o) == 3}
    for k in range(count):
        if k not in by_index and k not in faulty:
            graph.faults.append(f"network output {k} is missing: outputs must be numbered "
                                f"0..{count - 1} without gaps")
    graph.outputs = [by_index.get(k) for k in range(count)]
    if len(graph.outputs_channels) != count:
        graph.faults.append(f"outputs_channels has {len(graph.outputs_channels)} entries "
                            f"{graph.outputs_channels} but the network has {count} outputs")


def _order(graph):
    """Kahn's algorithm, always taking the smallest ready node index: deterministic."""
    import heapq
    deps = {node: set() for node in graph.node_layer}
    users = {node: set() for node in graph.node_layer}
    for (dst, _), (src, _) in graph.feeds.items():
        if src != 0:
            deps[dst].add(src)
            users[src].add(dst)
    ready = [node for node, d in deps.items() if not d]
    heapq.heapify(ready)
    order = []
    while ready:
        node = heapq.heappop(ready)
        order.append(node)
        for user in users[node]:
            deps[user].discard(node)
            if not deps[user]:
                heapq.heappush(ready, user)
    if len(order) != len(deps):
        stuck = sorted(set(deps) - set(order))
        graph.faults.append(f"the connections form a cycle through nodes {stuck}")
    graph.order = order
