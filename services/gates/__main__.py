"""Run the gates service: `python -m services.gates`."""

import asyncio

from services.gates.app import create_app

asyncio.run(create_app().run())
