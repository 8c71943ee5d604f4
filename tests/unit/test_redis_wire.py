"""Commands written in Redis's wire protocol by hand must be the bytes the client itself packs."""

from __future__ import annotations

import redis

from features.redis_wire import command


def test_hand_written_commands_are_the_clients_own_bytes():
    packer = redis.Connection()  # never connects: only its packer is used
    odd = [b"", b"\r\n", b"\x00\xff" * 40, "é€".encode(), b"$3\r\n*1", b"x" * 70_000]
    for args in ([b"PING"], [b"HGET", b"key", b"_reasons"], [b"HMGET", *odd],
                 [b"GET", odd[-1]]):
        assert command(*args) == b"".join(packer.pack_command(*args))
