"""Network faults for the cluster tests: packet-drop rules inside a private network namespace.

The whole cluster test (driver + every ayder) runs inside one namespace made by `unshare -n`
(tests/cluster/run does that), so 127.0.0.0/8 and its firewall belong to the test alone. Nodes live
on 127.0.0.1..127.0.0.7; the test's HTTP clients use CLIENT_ADDR as their source address so that a
partition between nodes never cuts the clients off.

Invariants:
  1. No rule is ever added unless we are in a private network namespace (in_private_netns()):
     the host's firewall is never touched. Every rule lives in our own chain (CHAIN), jumped to
     from INPUT; heal() flushes that chain only.
  2. Rules match on (source address, destination address) pairs and DROP silently in INPUT (a lost
     packet, as on a real network; OUTPUT drops would fail sendmsg at once with EPERM). A link
     A -> B is cut by dropping packets with source A and destination B.
  3. Only loopback (127.0.0.0/8) addresses are ever used; nothing is sent to private ranges.
"""
import os
import shutil
import subprocess

CHAIN = "AYDER_PART"
NFT_TABLE = "ayder_part"
CLIENT_ADDR = "127.0.0.100"   # source address of the test's HTTP clients
MAX_NODES = 7


def node_addr(i):
    """The address of node i (0-based): 127.0.0.(i+1)."""
    if not 0 <= i < MAX_NODES:
        raise ValueError("node index out of range: %r" % (i,))
    return "127.0.0.%d" % (i + 1)


def _ns_inode(pid):
    try:
        return os.stat("/proc/%s/ns/net" % pid).st_ino
    except OSError:
        return None


def in_private_netns():
    """True when tests/cluster/run made our namespace: its marker is set, and our namespace differs
    from the one the script started in (AYDER_HOST_NETNS, recorded before `unshare -n`) and from
    pid 1's when that is readable. All must hold before any rule is written."""
    if os.environ.get("AYDER_IN_NETNS") != "1":
        return False
    mine = _ns_inode("self")
    host = os.environ.get("AYDER_HOST_NETNS", "")
    if mine is None or not host.isdigit() or int(host) == mine:
        return False
    init = _ns_inode(1)   # may be unreadable in a container; then the recorded inode decides
    return init is None or init != mine


def backend():
    """'iptables', 'nft', or None when neither tool is installed."""
    if shutil.which("iptables"):
        return "iptables"
    if shutil.which("nft"):
        return "nft"
    return None


def _run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode,
                                                  r.stderr.decode("utf-8", "replace").strip()))
    return r.stdout.decode("utf-8", "replace")


def _check_addr(a):
    parts = a.split(".")
    if len(parts) != 4 or parts[0] != "127" or not all(p.isdigit() and int(p) < 256
                                                       for p in parts):
        raise ValueError("refusing a non-loopback address in a rule: %r" % (a,))


class Net:
    """Partition rules for one test run. Use as: net = Net(); net.setup(); ...; net.heal()."""

    def __init__(self):
        self.kind = backend()
        self.links = set()   # (src_addr, dst_addr) pairs currently dropped
        self.ready = False
        self.faults = {}     # kind -> count, for the figures

    def setup(self):
        if not in_private_netns():
            raise RuntimeError("not in a private network namespace: run tests/cluster/run "
                               "(refusing to touch this namespace's firewall)")
        if self.kind is None:
            raise RuntimeError("neither iptables nor nft is installed")
        _run(["ip", "link", "set", "lo", "up"])
        if self.kind == "iptables":
            r = subprocess.run(["iptables", "-N", CHAIN], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
            if r.returncode != 0 and b"exists" not in r.stderr:
                raise RuntimeError("iptables -N: %s" % r.stderr.decode("utf-8", "replace"))
            _run(["iptables", "-F", CHAIN])
            if subprocess.run(["iptables", "-C", "INPUT", "-j", CHAIN], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=30).returncode != 0:
                _run(["iptables", "-I", "INPUT", "1", "-j", CHAIN])
        else:
            _run(["nft", "add", "table", "ip", NFT_TABLE])
            _run(["nft", "add", "chain", "ip", NFT_TABLE, "input",
                  "{ type filter hook input priority -10 ; policy accept ; }"])
            _run(["nft", "flush", "chain", "ip", NFT_TABLE, "input"])
        self.links.clear()
        self.ready = True
        return self

    # ---- primitive: cut one direction

    def drop(self, src, dst):
        """Drop every packet from address src to address dst (one direction)."""
        if not self.ready:
            raise RuntimeError("Net.setup() first")
        _check_addr(src)
        _check_addr(dst)
        if src == dst or (src, dst) in self.links:
            return
        if self.kind == "iptables":
            _run(["iptables", "-A", CHAIN, "-s", src, "-d", dst, "-j", "DROP"])
        else:
            _run(["nft", "add", "rule", "ip", NFT_TABLE, "input", "ip", "saddr", src,
                  "ip", "daddr", dst, "drop"])
        self.links.add((src, dst))

    def heal(self):
        """Remove every rule we added."""
        if not self.ready:
            return
        if self.kind == "iptables":
            _run(["iptables", "-F", CHAIN])
        else:
            _run(["nft", "flush", "chain", "ip", NFT_TABLE, "input"])
        self.links.clear()

    def rules(self):
        """The rules as the kernel has them (for failure reports)."""
        if not self.ready:
            return ""
        if self.kind == "iptables":
            return _run(["iptables", "-S", CHAIN])
        return _run(["nft", "list", "chain", "ip", NFT_TABLE, "input"])

    def _count(self, kind):
        self.faults[kind] = self.faults.get(kind, 0) + 1

    # ---- partitions over address groups

    def cut(self, a, b):
        """Symmetric: no packet between addresses a and b, either way."""
        self.drop(a, b)
        self.drop(b, a)

    def partition(self, groups, kind="partition"):
        """groups: lists of addresses; every pair in different groups is cut both ways."""
        for gi, g in enumerate(groups):
            for h in groups[gi + 1:]:
                for a in g:
                    for b in h:
                        self.cut(a, b)
        self._count(kind)

    def one_way(self, srcs, dsts, kind="one-way"):
        """Packets from every address in srcs to every address in dsts are dropped; the other
        direction still flows."""
        for a in srcs:
            for b in dsts:
                self.drop(a, b)
        self._count(kind)

    def isolate(self, addr, others, kind="isolate"):
        """addr can reach none of others, and none of them can reach it."""
        self.partition([[addr], [o for o in others if o != addr]], kind=kind)

    def close(self):
        """Heal and remove our chain/table (the namespace dies with the run anyway)."""
        if not self.ready:
            return
        self.heal()
        if self.kind == "iptables":
            subprocess.run(["iptables", "-D", "INPUT", "-j", CHAIN], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
            subprocess.run(["iptables", "-X", CHAIN], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        else:
            subprocess.run(["nft", "delete", "table", "ip", NFT_TABLE], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        self.ready = False
