"""Redis reads written in Redis's wire protocol and sent as one pipeline, for the hot paths.

Packing a hundred commands through the client (`pipeline().hget(...)` then `execute()`) costs
more interpreter time than the rest of a read: every argument goes through the client's encoder
and packer one at a time. Reads here are written as protocol bytes (`command`), sent in one write
on a pooled connection and answered with the client's own reply parser (`exchange`), as a
pipeline does. Used by the service's online reader (`features.online_fast`) and its read of the
kept reasons (`serving.reasons_store`).
"""

from __future__ import annotations


def command(*args: bytes) -> bytes:
    """One command in Redis's wire protocol (RESP): an array of bulk strings."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def exchange(client, payload: bytes, count: int) -> list:
    """Write `payload` (`count` commands) and read their replies, as a pipeline does; a read
    is idempotent, so once more on a fresh connection if the pooled one was dropped."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    try:
        return _exchange(client, payload, count)
    except RedisConnectionError:
        return _exchange(client, payload, count)


def _exchange(client, payload: bytes, count: int) -> list:
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([payload])
        return [conn.read_response() for _ in range(count)]
    except BaseException:
        conn.disconnect()  # replies may be left unread: never reuse this connection
        raise
    finally:
        pool.release(conn)
