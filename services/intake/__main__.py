"""Run the intake service: `python -m services.intake`."""

import asyncio

from services.intake.app import create_app

asyncio.run(create_app().run())
