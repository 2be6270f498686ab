"""Hypothesis strategies for match expressions, flow keys and actions (expr tests only)."""

from __future__ import annotations

from hypothesis import strategies as st

from netvirt.compiler.expr.ast import And, BoolSym, Cmp, CmpOp, Const, Expr, Not, Or, Value
from netvirt.compiler.expr.symbols import SYMBOLS, Symbol, assignable, slice_symbol
from netvirt.compiler.stages import BY_TABLE
from netvirt.dataplane import actions as act
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import BY_NAME, FIELDS, new_key

OPS: tuple[CmpOp, ...] = ("==", "!=", "<", "<=", ">", ">=")

# ---------------------------------------------------------------- any symbol (round trips)


def _masked(width: int) -> st.SearchStrategy[Value]:
    full = (1 << width) - 1
    return st.tuples(st.integers(0, full), st.integers(0, full)).map(
        lambda vm: Value(vm[0] & vm[1], vm[1])
    )


def any_value(sym: Symbol) -> st.SearchStrategy[Value]:
    plain = st.integers(0, sym.value_mask).map(Value)
    options = [plain, _masked(sym.width)]
    if sym.kind == "port":
        options.append(st.text(max_size=12).map(lambda n: Value(0, None, n)))
    return st.one_of(options)


def any_leaf(sym: Symbol) -> st.SearchStrategy[Expr]:
    if sym.is_predicate:
        return st.just(BoolSym(sym.name))
    single = st.integers(0, sym.value_mask).map(lambda v: (Value(v),))
    ranged = st.builds(Cmp, st.just(sym.name), st.sampled_from(OPS[2:]), single)
    sets = st.lists(any_value(sym), min_size=1, max_size=3).map(tuple)
    equal = st.builds(Cmp, st.just(sym.name), st.sampled_from(OPS[:2]), sets)
    leaves = [ranged, equal]
    if sym.is_boolean:
        leaves.append(st.just(BoolSym(sym.name)))
    return st.one_of(leaves)


def _tree(leaves: st.SearchStrategy[Expr], max_leaves: int) -> st.SearchStrategy[Expr]:
    def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        several = st.lists(children, min_size=2, max_size=3).map(tuple)
        return st.one_of(children.map(Not), several.map(And), several.map(Or))

    return st.recursive(leaves, extend, max_leaves=max_leaves)


any_symbol = st.sampled_from(sorted(SYMBOLS.values(), key=lambda s: s.name))
any_exprs = _tree(st.one_of(any_symbol.flatmap(any_leaf), st.booleans().map(Const)), max_leaves=8)

# ---------------------------------------------------------------- semantic checks


PORTS = {"a": 1, "b": 2, "c": 3}
POOLS: dict[str, list[int]] = {
    "eth.type": [0x800, 0x86DD, 0x806, 0x8100],
    "ip.proto": [1, 6, 17, 58, 132],
    "tp.dst": [0, 1, 79, 80, 81, 1023, 1024, 65535],
    "tp.src": [0, 53, 67, 68, 0xFFFF],
    "icmp.type": [0, 8, 135, 136],
    "icmp.code": [0, 1],
    "ip.ttl": [1, 64, 255],
    "ip4.src": [0x0A000001, 0x0A000002, 0x0A000101, 0xC0A80001],
    "inport": [1, 2, 3, 4],
}
SEMANTIC_SYMBOLS = [
    "eth.type",
    "ip.proto",
    "tcp.dst",
    "udp.dst",
    "udp.src",
    "icmp4.type",
    "ip4.src",
    "inport",
    "ct.est",
    "ct.trk",
    "ct.new",
    "flags.loopback",
    "eth.mcast",
    "ip4",
    "ip6",
    "ip",
    "tcp",
    "udp",
    "icmp",
    "arp",
    "nd_ns",
]


def _pool_value(sym: Symbol) -> st.SearchStrategy[Value]:
    assert sym.field is not None
    if sym.kind == "port":
        return st.sampled_from([Value(0, None, n) for n in PORTS] + [Value(4)])
    pool = POOLS.get(sym.field)
    plain = st.sampled_from(pool) if pool else st.integers(0, sym.value_mask)
    masked = st.tuples(plain, st.integers(0, sym.value_mask)).map(
        lambda vm: Value(vm[0] & vm[1], vm[1])
    )
    return st.one_of(plain.map(Value), masked)


def semantic_leaf(name: str) -> st.SearchStrategy[Expr]:
    sym = SYMBOLS[name]
    if sym.is_predicate or sym.width == 1:
        return st.just(BoolSym(name))
    single = _pool_value(sym).map(lambda v: (Value(v.value),))
    ranged = st.builds(Cmp, st.just(name), st.sampled_from(OPS[2:]), single)
    sets = st.lists(_pool_value(sym), min_size=1, max_size=2).map(tuple)
    equal = st.builds(Cmp, st.just(name), st.sampled_from(OPS[:2]), sets)
    return st.one_of(equal, equal, ranged)


semantic_exprs = _tree(
    st.one_of(st.sampled_from(SEMANTIC_SYMBOLS).flatmap(semantic_leaf), st.booleans().map(Const)),
    max_leaves=5,
)


PROFILES = [(0x800, 6), (0x86DD, 6), (0x800, 17), (0x86DD, 17), (0x800, 1), (0x86DD, 58)]


@st.composite
def keys(draw: st.DrawFn) -> list[int]:
    """Random keys, most of them well-formed packets (ethertype and protocol agree)."""
    key = new_key()
    if draw(st.integers(0, 3)):
        eth_type, proto = draw(st.sampled_from(PROFILES))
        key[BY_NAME["eth.type"].index] = eth_type
        key[BY_NAME["ip.proto"].index] = proto
        key[BY_NAME["ip.ttl"].index] = 255
    for f in FIELDS:
        if f.name in ("eth.type", "ip.proto", "ip.ttl") and key[f.index]:
            continue
        pool = POOLS.get(f.name)
        if pool is not None and draw(st.booleans()):
            key[f.index] = draw(st.sampled_from(pool))
        elif f.name in POOLS or f.name in ("ct_state", "flags", "eth.dst"):
            key[f.index] = draw(st.integers(0, f.full_mask))
    return key


# ---------------------------------------------------------------- actions

PORT_NAMES = {1: "lsp1", 2: 'we"ird\\name', 3: "_MC_flood"}
PORT_KEYS = {name: key for key, name in PORT_NAMES.items()}
WRITABLE = sorted(
    n
    for n in BY_NAME
    if (t := assignable(n)) is not None and t[2] == BY_NAME[n].width and n != "metadata"
)
SLICES = sorted(
    (s.field, s.field_mask)
    for s in SYMBOLS.values()
    if s.field and slice_symbol(s.field, s.field_mask)
)


@st.composite
def set_fields(draw: st.DrawFn) -> act.SetField:
    if draw(st.booleans()):
        field, mask = draw(st.sampled_from(SLICES))
        return act.SetField(field, draw(st.sampled_from([0, mask])), mask)
    name = draw(st.sampled_from(WRITABLE))
    full = BY_NAME[name].full_mask
    if name in ("inport", "outport"):
        # port fields print through the port namer: only known keys round-trip
        return act.SetField(name, draw(st.sampled_from(sorted(PORT_NAMES))))
    value = draw(st.integers(0, full))
    if draw(st.booleans()):
        return act.SetField(name, value)
    mask = draw(st.integers(0, full))
    return act.SetField(name, value & mask, mask)


@st.composite
def moves(draw: st.DrawFn) -> act.Move | act.Exchange:
    dst = draw(st.sampled_from(WRITABLE))
    same = [n for n in WRITABLE if BY_NAME[n].width == BY_NAME[dst].width]
    src = draw(st.sampled_from(same))
    return draw(st.sampled_from([act.Move(dst, src), act.Exchange(dst, src)]))


def _ip(version: int) -> st.SearchStrategy[int]:
    return st.integers(0, (1 << (32 if version == 4 else 128)) - 1)


@st.composite
def nats(draw: st.DrawFn) -> object:
    version = draw(st.sampled_from([4, 6]))
    ip = draw(_ip(version))
    port = draw(st.none() | st.integers(0, 0xFFFF))
    lo = draw(st.integers(0, 0xFFFF))
    rng = draw(st.none() | st.integers(lo, 0xFFFF).map(lambda hi: (lo, hi)))
    return draw(
        st.sampled_from(
            [
                act.CtDnat(),
                act.CtSnat(),
                act.CtDnat(ip, version, port),
                act.CtSnat(ip, version, rng),
            ]
        )
    )


@st.composite
def backends(draw: st.DrawFn) -> act.Backend:
    version = draw(st.sampled_from([4, 6]))
    return act.Backend(draw(_ip(version)), draw(st.none() | st.integers(0, 0xFFFF)), version)


u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF_FFFF)
macs = st.integers(0, (1 << 48) - 1)
dhcp_options = st.builds(
    act.DhcpOption,
    st.sampled_from([1, 3, 6, 12, 15, 26, 51, 121, 200]) | u8,
    st.one_of(
        st.binary(max_size=24),
        st.text(max_size=10).map(str.encode),
        st.sampled_from([b"\x18\x0a\x01\x02\x0a\x00\x00\x01", b"\x00\x0a\x00\x00\xfe"]),
    ),
)

simple_actions = st.one_of(
    st.builds(act.Next, st.none() | st.sampled_from(sorted(BY_TABLE)) | st.integers(100, 999)),
    st.builds(act.Drop, st.sampled_from(list(DropReason))),
    set_fields(),
    moves(),
    nats(),
    st.builds(act.CtCommit, st.none() | u32),
    st.builds(
        act.CtLb,
        st.lists(backends(), max_size=3).map(tuple),
        st.sampled_from(["ROUND_ROBIN", "SOURCE_IP", "LEAST_CONNECTIONS"]),
        u32,
    ),
    st.sampled_from(
        [
            act.Output(),
            act.DecTTL(),
            act.CtNext(),
            act.CtClear(),
            act.PutMacBinding(),
            act.LookupMacBinding(),
        ]
    ),
)


def _with_then(then: st.SearchStrategy[tuple[object, ...]]) -> st.SearchStrategy[object]:
    return st.one_of(
        st.builds(act.EmitIcmpError, u8, u8, then, u16),
        st.builds(act.EmitArpRequest, then),
        st.builds(
            act.DhcpReply,
            _ip(4),
            _ip(4),
            macs,
            _ip(4),
            u32,
            st.lists(dhcp_options, max_size=3).map(tuple),
            then,
        ),
        st.builds(act.NdAdvert, _ip(6), macs, st.booleans(), then),
        st.builds(
            act.RouterAdvert,
            macs,
            _ip(6),
            st.lists(st.tuples(_ip(6), st.integers(0, 128), u8), max_size=2).map(tuple),
            u32,
            st.booleans(),
            st.booleans(),
            then,
        ),
    )


action_lists = st.recursive(
    st.lists(simple_actions, max_size=4).map(tuple),
    lambda inner: st.lists(st.one_of(simple_actions, _with_then(inner)), max_size=3).map(tuple),
    max_leaves=8,
)


def _leaves(e: Expr) -> list[Cmp]:
    if isinstance(e, Cmp):
        return [e]
    if isinstance(e, Not):
        return _leaves(e.term)
    if isinstance(e, And | Or):
        return [c for t in e.terms for c in _leaves(t)]
    return []


def boundary_keys(expr: Expr, base: list[list[int]]) -> list[list[int]]:
    """``base`` plus, for every constant in ``expr``, each base key with that symbol's bits
    set to the constant and its neighbours: where ranges, masks and sets are decided."""
    out = [list(k) for k in base]
    for c in _leaves(expr):
        sym = SYMBOLS[c.symbol]
        if sym.field is None:
            continue
        spec = BY_NAME[sym.field]
        for v in c.values:
            value = PORTS.get(v.text, 0) if v.text is not None else v.value
            for probe in (value - 1, value, value + 1):
                if not 0 <= probe <= sym.value_mask:
                    continue
                for k in base:
                    key = list(k)
                    cleared = key[spec.index] & ~sym.field_mask
                    key[spec.index] = cleared | probe << sym.shift
                    out.append(key)
    return out
