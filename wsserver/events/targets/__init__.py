"""
The event targets, one module per target type: L{postback
<wsserver.events.targets.postback>}, L{redis <wsserver.events.targets.redis>},
L{postgresql <wsserver.events.targets.postgresql>} and L{mysql
<wsserver.events.targets.mysql>} (on L{sql <wsserver.events.targets.sql>}),
L{amqp <wsserver.events.targets.amqp>}, L{socket
<wsserver.events.targets.socket>}, L{udp <wsserver.events.targets.udp>};
L{types <wsserver.events.targets.types>} names the types that parse their own
keys, L{base <wsserver.events.targets.base>} holds what they share, and
L{senders <wsserver.events.targets.senders>} turns target configs into
senders.  Nothing is imported here, so that the config can read the types'
keys without importing the notifier.
"""
