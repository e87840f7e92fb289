# Registers "twistd wsserver"; imports nothing heavy so that twistd starts fast.
# No __init__.py beside this file: Twisted skips plugin folders that have one.
from twisted.application.service import ServiceMaker

wsserver = ServiceMaker(
    "wsserver",
    "wsserver.tap",
    "WebSocket chat and notification server",
    "wsserver",
)
