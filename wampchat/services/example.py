"""A minimal backend service: rpc.example.roll(sides) announces a dice roll on chat.main."""

import random

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions


class DiceService(ApplicationSession):
    """Runs in-process (listed under `components`) or as `wampchat component`."""

    async def onJoin(self, details):
        await self.register(self.roll, "rpc.example.roll",
                            options=RegisterOptions(details_arg="details"))

    def roll(self, sides=6, details=None):
        if type(sides) is not int or not 2 <= sides <= 100:
            raise ApplicationError(ApplicationError.INVALID_ARGUMENT, "sides: 2 to 100")
        value = random.randint(1, sides)
        # The caller is known from caller disclosure (the `rpc.` rule), never from an argument.
        self.publish("chat.main", **{"from": "System",
                                     "message": f"{details.caller_authid} rolled {value} (d{sides})"})
        return value
