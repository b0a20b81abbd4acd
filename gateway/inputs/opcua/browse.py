"""Walk an OPC UA server's address space for its variables, within the server's limits.

Breadth first from a root node along hierarchical references (Organizes, HasComponent, ...),
Objects and Variables only. Each node is visited once however many paths lead to it (a
`Favorites` folder, a type's instance seen from two views); its path is the first, shortest
one found, except that a variable first found through Organizes (a folder that lists it) takes
the path of the object it is a component of (HasComponent: its owner) when that turns up. The
Server object (i=2253: the server's own diagnostics) is not entered unless it is the root. A
variable's HasProperty children are not variables of the process: its `EngineeringUnits` and
`EURange` are read for the point list, the others left.

Numbers only: a variable is kept when its DataType is Boolean, a number (Number and every
subtype, enumerations included) or BaseDataType (any value: the gateway marks a reading that is
not a number bad), and its ValueRank allows a scalar; others are counted by reason.

Limits: every Browse carries at most MaxNodesPerBrowse nodes and every Read MaxNodesPerRead
(the server's OperationLimits; 0 means none, and then `DEFAULT_BATCH`). A node with more
references than one answer carries comes back with a continuation point, followed at once with
BrowseNext (servers hold few: MaxBrowseContinuationPoints per session); a node the server had
no continuation point left for (BadNoContinuationPoints) is browsed again in a smaller batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from asyncua import Client, ua
from asyncua.ua.status_codes import get_name_and_doc

DEFAULT_BATCH = 500  # nodes per request when the server states no limit
# Requests in flight at once: over a network with latency (a site on a cellular link, 50 ms a
# round trip; ~300 round trips for 10,000 variables under small limits) a walk one request at
# a time waits on the round trips. On loopback it changes nothing measurable (2.0-3.1 s
# either way for 10,800 variables, 2 busy cores).
IN_FLIGHT = 4
MAX_REFERENCES = 1000  # references per node in one Browse answer, asked of the server
_OBJECTS = ua.NodeId(ua.Int32(ua.ObjectIds.ObjectsFolder))
_SERVER = ua.NodeId(ua.Int32(ua.ObjectIds.Server))
_HAS_PROPERTY = ua.NodeId(ua.Int32(ua.ObjectIds.HasProperty))
_ORGANIZES = ua.NodeId(ua.Int32(ua.ObjectIds.Organizes))
_OWNED = frozenset({ua.NodeId(ua.Int32(ua.ObjectIds.HasComponent)),
                    ua.NodeId(ua.Int32(ua.ObjectIds.HasOrderedComponent))})
_HAS_SUBTYPE = ua.NodeId(ua.Int32(ua.ObjectIds.HasSubtype))
_HIERARCHICAL = ua.NodeId(ua.Int32(ua.ObjectIds.HierarchicalReferences))
_LIMITS = (ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
           ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
           ua.ObjectIds.Server_ServerCapabilities_MaxBrowseContinuationPoints)
# Built-in data types (namespace 0) a point can carry, and those it cannot; any other type is
# followed up its HasSubtype chain to one of these.
_NUMERIC = {ua.ObjectIds.Boolean: "Boolean", ua.ObjectIds.BaseDataType: "BaseDataType",
            ua.ObjectIds.Number: "Number", ua.ObjectIds.Enumeration: "Enumeration"}
_NOT_NUMERIC = {ua.ObjectIds.String: "String", ua.ObjectIds.DateTime: "DateTime",
                ua.ObjectIds.Guid: "Guid", ua.ObjectIds.ByteString: "ByteString",
                ua.ObjectIds.XmlElement: "XmlElement", ua.ObjectIds.NodeId: "NodeId",
                ua.ObjectIds.ExpandedNodeId: "ExpandedNodeId",
                ua.ObjectIds.StatusCode: "StatusCode", ua.ObjectIds.QualifiedName: "QualifiedName",
                ua.ObjectIds.LocalizedText: "LocalizedText", ua.ObjectIds.Structure: "Structure",
                ua.ObjectIds.DataValue: "DataValue", ua.ObjectIds.DiagnosticInfo: "DiagnosticInfo"}
_SCALAR_RANKS = {-3, -2, -1}  # ScalarOrOneDimension, Any, Scalar
_PROPERTIES = ("EngineeringUnits", "EURange")


class BrowseRefused(Exception):
    """The server refused to browse the root, or a Browse or Read service as a whole."""

    def __init__(self, what: str, code: int) -> None:
        self.code = code
        name, doc = get_name_and_doc(code)
        super().__init__(f"{what}: {name} ({doc.rstrip('.')})")


@dataclass(frozen=True, slots=True)
class BrowseLimits:
    """The server's limits a walk splits its Browse and Read calls by."""

    browse: int
    read: int
    continuation: int  # 0: the server states no limit

    @classmethod
    def of(cls, values: Sequence[int]) -> BrowseLimits:
        browse, read, continuation = values
        return cls(browse or DEFAULT_BATCH, read or DEFAULT_BATCH, continuation)


@dataclass(slots=True)
class Variable:
    """A variable found: its node, browse path from the root and the attributes read."""

    node: ua.NodeId
    path: tuple[str, ...]
    properties: dict[str, ua.NodeId] = field(default_factory=dict)
    data_type: ua.NodeId | None = None
    value_rank: int = -2
    description: str = ""
    unit: str = ""
    lo: float | None = None
    hi: float | None = None


@dataclass
class Walk:
    """What a walk found: the variables kept, in the order found, and what was left out."""

    variables: list[Variable]
    skipped: Counter[str]  # reason ("String", "array", "not readable") -> variables
    nodes: int  # nodes browsed
    refused: Counter[str]  # status name -> nodes below the root the server would not browse
    seconds: float


Progress = Callable[[int, int, int], None]  # (nodes browsed, variables found, nodes queued)


async def read_limits(client: Client) -> BrowseLimits:
    values = await client.uaclient.read(ua.ReadParameters(NodesToRead=[
        ua.ReadValueId(NodeId=ua.NodeId(ua.Int32(i)), AttributeId=ua.AttributeIds.Value)
        for i in _LIMITS]))
    found = []
    for dv in values:
        value = dv.Value.Value if dv.Value is not None else None
        good = dv.StatusCode is None or dv.StatusCode.is_good()
        found.append(int(value) if good and isinstance(value, int) and value > 0 else 0)
    return BrowseLimits.of(found)


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    return (items[i:i + size] for i in range(0, len(items), size))


class Walker:
    """One walk over one connected client."""

    def __init__(self, client: Client, limits: BrowseLimits,
                 progress: Progress | None = None) -> None:
        self.client = client
        self.limits = limits
        self.progress = progress or (lambda nodes, variables, queued: None)
        self._listed: dict[ua.NodeId, Variable] = {}  # variables found through Organizes only

    async def walk(self, root: ua.NodeId = _OBJECTS, shown: str | None = None) -> Walk:
        """Every variable under `root` (named `shown` in an error, default its id)."""
        start = time.monotonic()
        queue: deque[tuple[ua.NodeId, tuple[str, ...], Variable | None]] = deque(
            [(root, (), None)])
        seen = {root}
        found: list[Variable] = []
        refused: Counter[str] = Counter()
        retry: deque = deque()  # nodes the server had no continuation point for
        nodes = 0
        while queue or retry:
            retrying = not queue
            if queue:
                batches = [[queue.popleft() for _ in range(min(self.limits.browse, len(queue)))]
                           for _ in range(min(IN_FLIGHT, -(-len(queue) // self.limits.browse)))]
            else:  # alone, in a batch the server has continuation points enough for
                size = max(1, self.limits.continuation)
                batches = [[retry.popleft() for _ in range(min(size, len(retry)))]]
            answers = await asyncio.gather(*(self._browse([node for node, _, _ in batch])
                                             for batch in batches))
            batch = [entry for b in batches for entry in b]
            results = [result for answer in answers for result in answer]
            for (node, path, variable), (code, references) in zip(batch, results, strict=True):
                if code == ua.StatusCodes.BadNoContinuationPoints and not retrying:
                    retry.append((node, path, variable))  # once: a second refusal stands
                    continue
                nodes += 1
                if code != ua.StatusCodes.Good:
                    if node == root:
                        raise BrowseRefused(f"the server refused to browse "
                                            f"{shown or node.to_string()}", code)
                    refused[ua.StatusCode(ua.UInt32(code)).name] += 1
                    continue
                for ref in references:
                    self._follow(ref, path, variable, queue, seen, found)
            self.progress(nodes, len(found), len(queue) + len(retry))
        skipped = await self._read_attributes(found)
        return Walk(found, skipped, nodes, refused, time.monotonic() - start)

    def _follow(self, ref: ua.ReferenceDescription, path: tuple[str, ...],
                parent: Variable | None, queue: deque, seen: set[ua.NodeId],
                found: list[Variable]) -> None:
        if getattr(ref.NodeId, "ServerIndex", 0):  # a node on another server
            return
        target = _local(ref.NodeId)
        name = ref.BrowseName.Name or ""
        if ref.ReferenceTypeId == _HAS_PROPERTY:
            if parent is not None and name in _PROPERTIES:
                parent.properties[name] = target
            return
        if target in self._listed and ref.ReferenceTypeId in _OWNED:
            self._listed.pop(target).path = (*path, name)
        if target in seen or target == _SERVER:
            return
        seen.add(target)
        variable = None
        if ref.NodeClass == ua.NodeClass.Variable:
            variable = Variable(target, (*path, name))
            found.append(variable)
            if ref.ReferenceTypeId == _ORGANIZES:
                self._listed[target] = variable
        queue.append((target, (*path, name), variable))

    async def _browse(self, nodes: list[ua.NodeId]
                      ) -> list[tuple[int, list[ua.ReferenceDescription]]]:
        """(status code, references) per node, continuation points followed."""
        params = ua.BrowseParameters(
            View=ua.ViewDescription(), RequestedMaxReferencesPerNode=MAX_REFERENCES,
            NodesToBrowse=[ua.BrowseDescription(
                NodeId=node, BrowseDirection=ua.BrowseDirection.Forward,
                ReferenceTypeId=_HIERARCHICAL, IncludeSubtypes=True,
                NodeClassMask=ua.NodeClass.Object | ua.NodeClass.Variable,
                ResultMask=ua.BrowseResultMask.All) for node in nodes])
        results = await self._service("Browse", self.client.uaclient.browse(params))
        out = [(r.StatusCode.value, list(r.References or ())) for r in results]
        pending = {k: r.ContinuationPoint for k, r in enumerate(results) if r.ContinuationPoint}
        while pending:
            keys = list(pending)
            more = await self._service("BrowseNext", self.client.uaclient.browse_next(
                ua.BrowseNextParameters(ReleaseContinuationPoints=False,
                                        ContinuationPoints=[pending[k] for k in keys])))
            pending = {}
            for k, r in zip(keys, more, strict=True):
                if not r.StatusCode.is_good():
                    out[k] = (r.StatusCode.value, out[k][1])
                    continue
                out[k][1].extend(r.References or ())
                if r.ContinuationPoint:
                    pending[k] = r.ContinuationPoint
        return out

    async def _read(self, reads: list[ua.ReadValueId]) -> list[ua.DataValue]:
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def read(chunk: Sequence[ua.ReadValueId]) -> list[ua.DataValue]:
            async with slots:
                return await self._service("Read", self.client.uaclient.read(
                    ua.ReadParameters(NodesToRead=list(chunk))))

        parts = await asyncio.gather(*(read(c) for c in _chunks(reads, self.limits.read)))
        return [dv for part in parts for dv in part]

    async def _read_attributes(self, found: list[Variable]) -> Counter[str]:
        """Fill in data type, value rank, description, unit and range; drop (and count) the
        variables a point cannot take. Returns the counts by reason."""
        attrs = (ua.AttributeIds.DataType, ua.AttributeIds.ValueRank,
                 ua.AttributeIds.Description)
        reads = [ua.ReadValueId(NodeId=v.node, AttributeId=a) for v in found for a in attrs]
        props = [(v, name, node) for v in found for name, node in v.properties.items()]
        reads += [ua.ReadValueId(NodeId=node, AttributeId=ua.AttributeIds.Value)
                  for _, _, node in props]
        values = await self._read(reads)
        for k, v in enumerate(found):
            data_type, rank, text = (_value(dv) for dv in values[3 * k:3 * k + 3])
            v.data_type = data_type if isinstance(data_type, ua.NodeId) else None
            v.value_rank = rank if isinstance(rank, int) else -2
            v.description = (text.Text or "") if isinstance(text, ua.LocalizedText) else ""
        for (v, name, _), dv in zip(props, values[3 * len(found):], strict=True):
            value = _value(dv)
            if name == "EngineeringUnits" and isinstance(value, ua.EUInformation):
                v.unit = (value.DisplayName.Text if value.DisplayName else "") or ""
            elif name == "EURange" and isinstance(value, ua.Range) and value.Low < value.High:
                v.lo, v.hi = float(value.Low), float(value.High)
        kinds = await self._base_types({v.data_type for v in found if v.data_type is not None})
        skipped: Counter[str] = Counter()
        keep = []
        for v in found:
            base = "DataType not readable" if v.data_type is None else kinds.get(
                v.data_type, "unknown DataType")
            if base not in _NUMERIC.values() and base != "Number":
                skipped[base] += 1
            elif v.value_rank not in _SCALAR_RANKS:
                skipped["array"] += 1
            else:
                keep.append(v)
        found[:] = keep
        return skipped

    async def _base_types(self, types: set[ua.NodeId]) -> dict[ua.NodeId, str]:
        """The built-in type each data type derives from, by walking HasSubtype upwards."""
        known = {ua.NodeId(ua.Int32(i)): name
                 for i, name in (*_NUMERIC.items(), *_NOT_NUMERIC.items())}
        numbers = {ua.ObjectIds.SByte, ua.ObjectIds.Byte, ua.ObjectIds.Int16, ua.ObjectIds.UInt16,
                   ua.ObjectIds.Int32, ua.ObjectIds.UInt32, ua.ObjectIds.Int64,
                   ua.ObjectIds.UInt64, ua.ObjectIds.Float, ua.ObjectIds.Double,
                   ua.ObjectIds.Integer, ua.ObjectIds.UInteger, ua.ObjectIds.Decimal}
        known.update({ua.NodeId(ua.Int32(i)): "Number" for i in numbers})
        parent: dict[ua.NodeId, ua.NodeId | None] = {}
        todo = [t for t in types if t not in known]
        for _ in range(16):  # type hierarchies are shallow; a loop in one must not hang us
            if not todo:
                break
            described = [ua.BrowseDescription(
                NodeId=t, BrowseDirection=ua.BrowseDirection.Inverse, ReferenceTypeId=_HAS_SUBTYPE,
                IncludeSubtypes=False, NodeClassMask=ua.NodeClass.DataType,
                ResultMask=ua.BrowseResultMask.All) for t in todo]
            results = []
            for chunk in _chunks(described, self.limits.browse):
                results += await self._service("Browse", self.client.uaclient.browse(
                    ua.BrowseParameters(View=ua.ViewDescription(), NodesToBrowse=list(chunk))))
            nxt = []
            for t, r in zip(todo, results, strict=True):
                refs = r.References or []
                up = _local(refs[0].NodeId) if refs else None
                parent[t] = up
                if up is not None and up not in known and up not in parent:
                    nxt.append(up)
            todo = nxt

        def base(t: ua.NodeId | None) -> str | None:
            for _ in range(17):
                if t is None or t in known:
                    return known.get(t) if t is not None else None
                t = parent.get(t)
            return None

        return {t: name for t in types if (name := base(t)) is not None}

    @staticmethod
    async def _service(name: str, call: object) -> list:
        try:
            return await call  # type: ignore[misc]
        except ua.UaStatusCodeError as e:
            raise BrowseRefused(f"the server refused a {name} request", e.code) from None


def _local(node: ua.NodeId) -> ua.NodeId:
    """The NodeId of a reference's (Expanded)NodeId, hashable as the others."""
    return ua.NodeId(node.Identifier, node.NamespaceIndex, node.NodeIdType)


def _value(dv: ua.DataValue) -> object:
    if dv.StatusCode is not None and not dv.StatusCode.is_good():
        return None
    return dv.Value.Value if dv.Value is not None else None


def node_text(node: ua.NodeId, namespaces: Sequence[str]) -> str:
    """`nsu=<uri>;s=...` (namespace by URI, stable across server restarts), or the plain id in
    namespace 0.

    >>> node_text(ua.NodeId("a.b", 2), ["http://opcfoundation.org/UA/", "urn:x", "urn:y"])
    'nsu=urn:y;s=a.b'
    >>> node_text(ua.NodeId(2258, 0), ["http://opcfoundation.org/UA/"])
    'i=2258'
    """
    text = node.to_string()
    if node.NamespaceIndex == 0:
        return text
    identifier = text.partition(";")[2]
    if node.NamespaceIndex >= len(namespaces):
        return text
    return f"nsu={namespaces[node.NamespaceIndex]};{identifier}"
