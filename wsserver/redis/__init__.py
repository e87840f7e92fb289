"""
Redis connections for wsserver: where Redis is (L{wsserver.redis.address}),
one command connection with reconnects (L{wsserver.redis.link}), the
pub/sub connection of the cluster (L{wsserver.redis.link.RedisSubscriber}),
and the service that makes, hands out and closes the cluster's connections
(L{wsserver.redis.links}).

The cluster (L{wsserver.cluster}) and the Redis event target
(L{wsserver.events.targets.redis}) both connect through these.  Nothing is imported
here: the configuration (L{wsserver.clusterconfig}, L{wsserver.config})
imports L{wsserver.redis.address} only, which needs no Twisted networking.
"""
