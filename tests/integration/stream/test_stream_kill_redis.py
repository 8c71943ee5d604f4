"""`shipdelay stream` killed with SIGKILL mid-stream and restarted, on the Redis online store:
every valid event reflected exactly once, every malformed one dead-lettered."""

from tests.integration.stream.checks import sigkill_and_restart


def test_sigkilled_consumers_lose_nothing_and_count_nothing_twice_redis(stream_world, kafka,
                                                                        tmp_path):
    sigkill_and_restart(stream_world, kafka, tmp_path, "redis")
