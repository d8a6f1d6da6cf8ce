"""Real Redis topologies for the tests, started from the ``redis-server`` binary on free loopback
ports: a Sentinel set (a master, a replica, three sentinels) and a Cluster (three masters, three
replicas). Each is a context manager that stops every process it started."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Self

import redis

from notifier.testing import RedisServer, Service, free_port, wait_until

SERVICE = "mymaster"


class SentinelServer(RedisServer):
    """``redis-server sentinel.conf --sentinel``: the conf file must be writable (Sentinel
    rewrites it with what it learns)."""

    def __init__(self, master_port: int, quorum: int = 2) -> None:
        super().__init__()
        self.master_port = master_port
        self.quorum = quorum
        self.conf = Path(self._dir.name, "sentinel.conf")
        self.myid = secrets.token_hex(20)
        # What this sentinel knows before it starts: the replica and the other sentinels. A new
        # sentinel learns them from INFO and from hello messages, which come every 2 s: told,
        # the set is ready at once, and the messages then confirm it.
        self.known: list[str] = []

    def start(self, timeout: float = 10.0) -> Self:
        if not self.conf.exists():  # a restart keeps what it learned
            self.conf.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self._dir.name}\n"
                "sentinel resolve-hostnames no\n"
                f"sentinel myid {self.myid}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} {self.quorum}\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 3000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
                + "".join(f"{line}\n" for line in self.known)
            )
        log = os.path.join(self._dir.name, "sentinel.log")
        args = [self.binary, str(self.conf), "--sentinel", "--logfile", log]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        with self.client(socket_timeout=1.0) as probe:
            wait_until(lambda: self._answers(probe), timeout)
        return self


class SentinelSet(Service):
    """One master, one replica, three sentinels watching them as ``mymaster``."""

    def __init__(self, sentinels: int = 3) -> None:
        self.master = RedisServer()
        self.replica = RedisServer()
        self.sentinels: list[SentinelServer] = []
        self.count = sentinels

    def start(self) -> Self:
        self.master.start()
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica.start()
        self.sentinels = [SentinelServer(self.master.port) for _ in range(self.count)]
        for sentinel in self.sentinels:
            sentinel.known = [
                f"sentinel known-replica {SERVICE} 127.0.0.1 {self.replica.port}",
                *(
                    f"sentinel known-sentinel {SERVICE} 127.0.0.1 {other.port} {other.myid}"
                    for other in self.sentinels
                    if other is not sentinel
                ),
            ]
            sentinel.start()
        wait_until(self._ready, 30, 0.05)
        return self

    def _ready(self) -> bool:
        """The replica is in sync and every sentinel sees it and the other sentinels."""
        with self.master.client(socket_timeout=1) as client:
            info = client.info("replication")
        slave = info.get("slave0", {})
        if info.get("connected_slaves", 0) < 1 or slave.get("state") != "online":
            return False
        for sentinel in self.sentinels:
            with sentinel.client(socket_timeout=1) as client:
                seen = client.sentinel_master(SERVICE)
            if seen["num-slaves"] < 1 or seen["num-other-sentinels"] < self.count - 1:
                return False
        return True

    def url(self, password: str | None = None) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        auth = f":{password}@" if password else ""
        return f"redis+sentinel://{auth}{hosts}/{SERVICE}/0"

    def master_port(self) -> int:
        """The master's port as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            if sentinel.process is None:
                continue
            try:
                with sentinel.client(socket_timeout=1) as client:
                    _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                    return int(port)
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answered")

    def server(self, port: int) -> RedisServer:
        return self.master if self.master.port == port else self.replica

    def failover(self) -> float:
        """SENTINEL FAILOVER, then wait until the sentinels name the other server; the moment
        the new master was named (monotonic)."""
        old = self.master_port()
        with self.sentinels[0].client(socket_timeout=5) as client:
            client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        wait_until(lambda: self.master_port() != old, 30, 0.01)
        return time.monotonic()

    def stop(self) -> None:
        # The sentinels first (none may fail over meanwhile), the master of now last: a master
        # stopped with a replica attached waits for it to catch up (shutdown-timeout, seconds
        # after a failover), and after one the master is the server started as the replica.
        servers = sorted([self.replica, self.master], key=lambda s: role_of(s) == "master")
        for server in [*self.sentinels, *servers]:
            server.stop()


def role_of(server: RedisServer) -> str:
    """The role the server reports ("master" or "slave"); "down" if it is stopped or silent."""
    if server.process is None:
        return "down"
    try:
        with server.client(socket_timeout=1) as client:
            return str(client.info("replication")["role"])
    except redis.RedisError:
        return "down"


def replica_port_of(master: RedisServer) -> int | None:
    with master.client(socket_timeout=1) as client:
        info = client.info("replication")
    slave = info.get("slave0")
    return int(slave["port"]) if slave else None


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, and below 65536."""
    import socket

    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class ClusterSet(Service):
    """Six nodes, ``redis-server --cluster-enabled yes``, joined by ``redis-cli --cluster
    create ... --cluster-replicas 1``: three masters, each with a replica."""

    def __init__(self, nodes: int = 6) -> None:
        self.servers = [
            RedisServer(
                port=cluster_port(),
                extra=["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"],
            )
            for _ in range(nodes)
        ]

    def start(self) -> Self:
        for server in self.servers:
            server.extra += ["--cluster-config-file", f"nodes-{server.port}.conf"]
            server.start()
        cli = find_redis_cli()
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in self.servers)]
            + ["--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until(self._ready, 60, 0.1)
        return self

    def _ready(self) -> bool:
        """Every node says the cluster is ok, and every replica has synced with its master (a
        replica that never did is not promoted when its master fails)."""
        for server in self.servers:
            if server.process is None:
                continue
            with server.client(socket_timeout=1) as client:
                info = client.execute_command("CLUSTER", "INFO").decode()
                replication = client.info("replication")
            if "cluster_state:ok" not in info:
                return False
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                return False
        return len(self.masters()) == len(self.servers) // 2

    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers[:2]) + "/"

    def nodes(self) -> list[dict[str, object]]:
        """CLUSTER NODES as seen by the first live server: id, port, role, master id, slots."""
        for server in self.servers:
            if server.process is None:
                continue
            with server.client(socket_timeout=2) as client:
                text = client.execute_command("CLUSTER", "NODES")
            out = []
            for line in (text.decode() if isinstance(text, bytes) else str(text)).splitlines():
                fields = line.split()
                out.append({
                    "id": fields[0],
                    "port": int(fields[1].split(":")[1].split("@")[0]),
                    "role": "master" if "master" in fields[2] else "replica",
                    "failed": "fail" in fields[2],
                    "master": fields[3],
                    "slots": fields[8:],
                })  # fmt: skip
            return out
        raise RuntimeError("no cluster node is up")

    def masters(self) -> list[RedisServer]:
        ports = {n["port"] for n in self.nodes() if n["role"] == "master" and not n["failed"]}
        return [s for s in self.servers if s.port in ports and s.process is not None]

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def replica_of(self, master: RedisServer) -> RedisServer:
        nodes = self.nodes()
        master_id = next(n["id"] for n in nodes if n["port"] == master.port)
        port = next(n["port"] for n in nodes if n["master"] == master_id)
        return self.server(int(str(port)))

    def node_id(self, server: RedisServer) -> str:
        with server.client(socket_timeout=2) as client:
            return str(client.execute_command("CLUSTER", "MYID").decode())

    def migrate_slot(self, slot: int, target: RedisServer) -> None:
        """Move one slot to ``target`` as ``redis-cli --cluster reshard`` does: IMPORTING on the
        target, MIGRATING on the owner, MIGRATE its keys, then SETSLOT NODE on every master."""
        source = self.owner_of_slot(slot)
        source_id, target_id = self.node_id(source), self.node_id(target)
        with target.client(socket_timeout=5) as to, source.client(socket_timeout=5) as src:
            to.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            to.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for master in self.masters():
            if master not in (source, target):
                with master.client(socket_timeout=5) as other:
                    other.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def owner_of(self, key: bytes) -> RedisServer:
        from redis.crc import key_slot

        return self.owner_of_slot(key_slot(key))

    def owner_of_slot(self, slot: int) -> RedisServer:
        for server in self.masters():
            with server.client(socket_timeout=2) as client:
                ranges = client.execute_command("CLUSTER", "SLOTS")
            for start, end, master, *_ in ranges:
                if start <= slot <= end:
                    return self.server(int(master[1]))
        raise RuntimeError(f"no master owns slot {slot}")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def find_redis_cli() -> str:
    import shutil

    found = shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("redis-cli is not on PATH")
    return found
